"""One use case per task: decode -> deployment calls -> encode, and what came out.

``run_task`` takes a checked plan (services/pipelines/tasks.py) and the input's bytes
(None for text-to-image) and returns a ``TaskResult``: the encoded output, its media
type, sizes, per-step seconds, the texts a task produced, and the response headers a
sync route sends. The sync routes and the job Dispatcher both call it, so a task runs
the same way whichever path brought it. CPU work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from services.config import Settings
from services.imaging.codec import (
    CONTENT_TYPES,
    DecodedImage,
    decode_image,
    encode_image,
    encoder_options,
    image_limits,
)
from services.imaging.convert import ConvertOptions
from services.imaging.metadata import attach, check_format, read_metadata
from services.models.diffusion import GenerateOptions
from services.models.mesh_io import MeshOptions, MeshOutput
from services.pipelines.backend import TaskBackend
from services.pipelines.budget import Budget
from services.pipelines.faces import DetectOptions, FaceOptions, face_json
from services.pipelines.presets import Plan
from services.pipelines.tasks import (
    CaptionTask,
    GenerateTask,
    ImageFormat,
    RestoreFaceTask,
    TaskPlan,
)
from services.pipelines.upscale import UpscaleOptions, upscale_upload
from services.telemetry.tracing import tracer

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class TaskResult:
    """An encoded output and the facts about its run."""

    data: bytes
    content_type: str
    metric: str  # the model (or ``preset:NAME``, ``codec``) the images metric counts
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    step_seconds: dict[str, float]
    headers: dict[str, str] = field(default_factory=dict)
    texts: dict[str, Any] | None = None  # captions, tags, a generation's seed...
    preview: bytes | None = None  # a mesh's PNG render, stored beside a job's output


async def run_task(
    plan: TaskPlan, data: bytes | None, backend: TaskBackend, settings: Settings
) -> TaskResult:
    """Run one checked task on one input (``data`` None: text-to-image); with
    ``keep_metadata``, the input's EXIF, ICC and XMP go into the output."""
    keep = data is not None and bool(getattr(plan.spec, "keep_metadata", False))
    if keep and isinstance(plan.options, Plan) and plan.options.output is not None:
        check_format(plan.options.output.format)  # refused before any work
    result = await _run(plan, data, backend, settings)
    if not keep or result.content_type == JSON_TYPE:
        return result
    assert data is not None
    return await asyncio.to_thread(_with_metadata, result, data)


def _with_metadata(result: TaskResult, source: bytes) -> TaskResult:
    fmt = result.content_type.removeprefix("image/")
    kept = attach(result.data, fmt, read_metadata(source), result.output_size)
    return dataclasses.replace(result, data=kept)


async def _run(  # noqa: PLR0911 - one return per kind of task
    plan: TaskPlan, data: bytes | None, backend: TaskBackend, settings: Settings
) -> TaskResult:
    options = plan.options
    if isinstance(options, UpscaleOptions):
        assert data is not None
        return await _tiles(data, options, plan, backend, settings)
    if isinstance(options, FaceOptions | DetectOptions):
        assert data is not None
        return await _faces(data, options, plan, backend, settings)
    if isinstance(options, GenerateOptions):
        assert isinstance(plan.spec, GenerateTask)
        return await _generate(data, options, plan.spec, plan.budget, backend, settings)
    if isinstance(options, ConvertOptions):
        assert data is not None
        return await _convert(data, options, backend)
    if isinstance(options, MeshOptions):
        assert data is not None
        return await _mesh(data, options, plan.budget, backend, settings)
    if isinstance(options, Plan):
        assert data is not None
        return await _preset(data, options, plan.budget, backend, settings)
    assert data is not None and isinstance(plan.spec, CaptionTask)
    return await _caption(data, list(plan.spec.outputs), plan.budget, backend, settings)


async def _decode(data: bytes, settings: Settings, budget: Budget) -> DecodedImage:
    """Decode, then refuse an input whose size puts the plan over its compute budget."""
    image = await asyncio.to_thread(decode_image, data, image_limits(settings))
    budget.check(image.width, image.height)
    return image


async def _encode(pixels: Any, fmt: ImageFormat, quality: int, settings: Settings) -> bytes:
    return await asyncio.to_thread(encode_image, pixels, fmt, quality, encoder_options(settings))


def _size(pixels: Any) -> tuple[int, int]:
    height, width = pixels.shape[:2]
    return int(width), int(height)


def _sizes(input_size: tuple[int, int], output_size: tuple[int, int]) -> dict[str, str]:
    return {
        "X-Pixserve-Input-Size": "{}x{}".format(*input_size),
        "X-Pixserve-Output-Size": "{}x{}".format(*output_size),
    }


async def _tiles(
    data: bytes,
    options: UpscaleOptions,
    plan: TaskPlan,
    backend: TaskBackend,
    settings: Settings,
) -> TaskResult:
    """Upscale or denoise: the tile deployment serving the model."""
    result = await upscale_upload(data, options, plan.native_scale, backend, settings,
                                  plan.budget)  # fmt: skip
    headers = {
        "X-Pixserve-Model": options.model,
        "X-Pixserve-Tiles": str(result.tiles),
        **_sizes(result.input_size, result.output_size),
        **({"X-Pixserve-Fallback": result.fallback} if result.fallback else {}),
    }
    return TaskResult(
        result.data,
        result.content_type,
        options.model,
        result.input_size,
        result.output_size,
        result.step_seconds,
        headers,
    )


async def _faces(
    data: bytes,
    options: FaceOptions | DetectOptions,
    plan: TaskPlan,
    backend: TaskBackend,
    settings: Settings,
) -> TaskResult:
    """Faces restored onto the (optionally upscaled) background, or detected."""
    budget = plan.budget
    if isinstance(options, DetectOptions):
        return await _detect_faces(data, options, budget, backend, settings)
    assert isinstance(plan.spec, RestoreFaceTask)
    fmt, quality = plan.spec.format, plan.spec.quality
    with tracer.start_as_current_span("pixserve.restore_face") as span:
        started = time.perf_counter()
        decoded = await _decode(data, settings, budget)
        decoding = time.perf_counter()
        result = await backend.restore_faces(decoded, options)
        restoring = time.perf_counter()
        encoded = await _encode(result.pixels, fmt, quality, settings)
        size_in, size_out = (decoded.width, decoded.height), _size(result.pixels)
        span.set_attributes(
            {
                "pixserve.model": options.model,
                "pixserve.faces": len(result.faces),
                "pixserve.input_size": "{}x{}".format(*size_in),
                "pixserve.output_size": "{}x{}".format(*size_out),
            }
        )
    steps = {
        "decode": decoding - started,
        "restore_face": restoring - decoding,
        "encode": time.perf_counter() - restoring,
    }
    boxes = [[*face.box, face.score] for face in result.faces]
    headers = {
        "X-Pixserve-Model": options.model,
        "X-Pixserve-Faces": str(len(result.faces)),
        "X-Pixserve-Faces-Detected": str(result.detected),
        "X-Pixserve-Face-Boxes": json.dumps(boxes, separators=(",", ":")),
        **_sizes(size_in, size_out),
    }
    texts = {"faces": {"restored": len(result.faces), "detected": result.detected, "boxes": boxes}}
    return TaskResult(
        encoded, CONTENT_TYPES[fmt], options.model, size_in, size_out, steps, headers, texts
    )


async def _generate(
    data: bytes | None,
    options: GenerateOptions,
    spec: GenerateTask,
    budget: Budget,
    backend: TaskBackend,
    settings: Settings,
) -> TaskResult:
    """One SDXL image (image-to-image when an input came: its cost is checked against
    the input's size once decoded)."""
    with tracer.start_as_current_span("pixserve.generate") as span:
        started = time.perf_counter()
        start = await _decode(data, settings, budget) if data is not None else None
        result = await backend.generate(options, start)
        encoded = await _encode(result.pixels, spec.format, spec.quality, settings)
        size = _size(result.pixels)
        span.set_attributes(
            {
                "pixserve.model": result.checkpoint,
                "pixserve.steps": options.steps,
                "pixserve.output_size": "{}x{}".format(*size),
            }
        )
    headers = {
        "X-Pixserve-Checkpoint": result.checkpoint,
        "X-Pixserve-Seed": str(result.seed),
        "X-Pixserve-NSFW": "true" if result.nsfw else "false",
        "X-Pixserve-Output-Size": "{}x{}".format(*size),
    }
    texts = {
        "generate": {"seed": result.seed, "nsfw": result.nsfw, "checkpoint": result.checkpoint}
    }
    return TaskResult(
        encoded,
        CONTENT_TYPES[spec.format],
        f"sdxl:{result.checkpoint}",
        size,
        size,
        {"generate": time.perf_counter() - started},
        headers,
        texts,
    )


async def _convert(data: bytes, options: ConvertOptions, backend: TaskBackend) -> TaskResult:
    """Re-encoded (and resized) by the Codec deployment."""
    started = time.perf_counter()
    result = await backend.convert(data, options)
    size = (result.width, result.height)
    headers = {"X-Pixserve-Output-Size": "{}x{}".format(*size)}
    if result.quality is not None:
        headers["X-Pixserve-Quality"] = str(result.quality)
    return TaskResult(
        result.data,
        result.content_type,
        "codec",
        size,
        size,
        {"convert": time.perf_counter() - started},
        headers,
    )


async def _caption(
    data: bytes, want: list[str], budget: Budget, backend: TaskBackend, settings: Settings
) -> TaskResult:
    """Caption, tags and/or NSFW score, as JSON."""
    started = time.perf_counter()
    decoded = await _decode(data, settings, budget)
    described = (await backend.describe(decoded, want)).public()
    size = (decoded.width, decoded.height)
    return TaskResult(
        json.dumps(described).encode(),
        JSON_TYPE,
        "vision",
        size,
        size,
        {"caption": time.perf_counter() - started},
        {},
        described,
    )


async def _detect_faces(
    data: bytes, options: DetectOptions, budget: Budget, backend: TaskBackend, settings: Settings
) -> TaskResult:
    """Every face's box, score and five landmarks, as JSON."""
    started = time.perf_counter()
    decoded = await _decode(data, settings, budget)
    faces = [face_json(face) for face in await backend.detect_faces(decoded, options)]
    size = (decoded.width, decoded.height)
    found = {"detector": options.detector, "width": size[0], "height": size[1], "faces": faces}
    return TaskResult(json.dumps(found).encode(), JSON_TYPE, options.detector, size, size,
                      {"detect": time.perf_counter() - started},
                      {"X-Pixserve-Faces": str(len(faces))}, found)  # fmt: skip


async def _mesh(
    data: bytes, options: MeshOptions, budget: Budget, backend: TaskBackend, settings: Settings
) -> TaskResult:
    """A mesh of the image, its file as the output and its render as the preview."""
    with tracer.start_as_current_span("pixserve.mesh") as span:
        started = time.perf_counter()
        decoded = await _decode(data, settings, budget)
        decoding = time.perf_counter()
        output = await backend.mesh(decoded, options)
        span.set_attributes({"pixserve.model": options.model, "pixserve.faces": output.faces})
    size = (decoded.width, decoded.height)
    steps = {"decode": decoding - started, "mesh": time.perf_counter() - decoding}
    return _mesh_result(output, options, options.model, size, steps, {})


def _mesh_result(
    output: MeshOutput, options: MeshOptions, metric: str, size: tuple[int, int],
    steps: dict[str, float], headers: dict[str, str],
) -> TaskResult:  # fmt: skip
    """A mesh's task result: the file, the preview, its counts as texts and headers."""
    facts = {"engine": options.engine, "model": options.model, "format": options.format,
             **output.stats()}  # fmt: skip
    headers = {**headers, "X-Pixserve-Model": options.model,
               "X-Pixserve-Mesh-Vertices": str(output.vertices),
               "X-Pixserve-Mesh-Faces": str(output.faces),
               "X-Pixserve-Foreground": output.foreground,
               "X-Pixserve-Input-Size": "{}x{}".format(*size)}  # fmt: skip
    return TaskResult(output.data, output.content_type, metric, size, (0, 0), steps,
                      headers, {"mesh": facts}, output.preview_png)  # fmt: skip


async def _preset(
    data: bytes, plan: Plan, budget: Budget, backend: TaskBackend, settings: Settings
) -> TaskResult:
    """A preset's steps chained on the model deployments, then the Codec's encoding; a
    text-only preset's output is its texts as JSON, by step id."""
    with tracer.start_as_current_span("pixserve.preset") as span:
        started = time.perf_counter()
        decoded = await _decode(data, settings, budget)
        decoding = time.perf_counter()
        result = await backend.run_plan(decoded, plan)
        span.set_attributes(
            {
                "pixserve.preset": plan.preset,
                "pixserve.steps": ",".join(s.id for s in plan.steps),
                "pixserve.input_size": f"{decoded.width}x{decoded.height}",
            }
        )
    steps = {"decode": decoding - started, "pipeline": time.perf_counter() - decoding}
    size_in = (decoded.width, decoded.height)
    headers = {
        "X-Pixserve-Preset": plan.preset,
        "X-Pixserve-Steps": ",".join(s.id for s in plan.steps) or "encode",
        "X-Pixserve-Input-Size": "{}x{}".format(*size_in),
    }
    texts = result.texts or None
    if result.mesh is not None:
        assert plan.mesh is not None
        mesh = _mesh_result(result.mesh, plan.mesh, f"preset:{plan.preset}", size_in, steps,
                            headers)  # fmt: skip
        mesh.texts.update(result.texts)  # type: ignore[union-attr]
        return mesh
    if result.image is None:
        return TaskResult(
            json.dumps(result.texts).encode(),
            JSON_TYPE,
            f"preset:{plan.preset}",
            size_in,
            (0, 0),
            steps,
            headers,
            texts,
        )
    size_out = (result.image.width, result.image.height)
    headers["X-Pixserve-Output-Size"] = "{}x{}".format(*size_out)
    if result.texts:
        headers["X-Pixserve-Texts"] = json.dumps(result.texts, separators=(",", ":"))
    return TaskResult(
        result.image.data,
        result.image.content_type,
        f"preset:{plan.preset}",
        size_in,
        size_out,
        steps,
        headers,
        texts,
    )
