"""A platform backend without Ray or models, for route tests in the fast tier.

Each deployment call is a cheap numpy stand-in with the real call's shape (sizes,
dtypes, errors as ``PixserveError``): nearest-neighbour for tile models, the image
itself for faces, a flat image for generation, fixed texts for vision, a real relief
mesh of the image's brightness for meshes. Conversion
and a preset's final encoding use the real Codec code, which needs no model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
from PIL import Image

from services.admin.control import ModelCommand, ReplicaReport
from services.errors import ServiceUnavailable
from services.imaging.codec import DecodedImage, ImageLimits, color_plane, to_uint8
from services.imaging.convert import Converted, ConvertOptions, convert_image, encode_pixels
from services.imaging.faces import Face
from services.imaging.meshes import MESH_TYPES, decimate, export, normalized, preview, relief
from services.models.diffusion import Generated, GenerateOptions
from services.models.manifest import ModelSpec, load_manifest
from services.models.mesh_io import MeshOptions, MeshOutput
from services.models.residency import ModelState
from services.models.tile_io import TileJob, TileOutput
from services.models.vision import Answer, Description, Question, Tag
from services.pipelines.faces import (
    DetectOptions,
    FaceOptions,
    FaceResult,
    anonymize_faces,
    detect_faces,
)
from services.pipelines.presets import IMAGE_STEPS, SOURCE, Plan, PlanResult, TileStep
from services.platform import DeploymentReadiness, DeploymentView
from services.registry import DEPLOYMENT_OF_TASK, MODEL_DEPLOYMENTS

LIMITS = ImageLimits(50_000_000, 64_000_000, 16384)


def resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour to ``size`` (width, height), any dtype and channel count."""
    height, width = pixels.shape[:2]
    rows = np.arange(size[1]) * height // size[1]
    columns = np.arange(size[0]) * width // size[0]
    return pixels[rows][:, columns]


def centre_face(detector: str, pixels: np.ndarray) -> list[Face]:
    """The detector stand-in: one face over the middle half of the image, score 0.9."""
    height, width = pixels.shape[:2]
    box = (width / 4, height / 4, 3 * width / 4, 3 * height / 4)
    marks = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.42, 0.6], [0.58, 0.6]])
    return [Face(box, 0.9, (marks * [width, height]).astype(np.float32))]


class FakeBackend:
    """Implements ``PlatformBackend`` in-process; ``calls`` lists (method, detail)."""

    def __init__(self, loaded: Iterable[str] = ()) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.loaded = sorted(loaded)  # what every deployment reports loaded
        self.unloaded: set[str] = set()  # of those, unloaded through the admin routes
        self.modes: dict[str, str] = {}  # deployment -> memory mode set at run time
        self.manifest = load_manifest()

    def serves(self) -> set[str]:
        return set(MODEL_DEPLOYMENTS)

    async def upscale_image(self, job: TileJob) -> TileOutput:
        self.calls.append(("upscale_image", job.model))
        height, width = job.pixels.shape[:2]
        return TileOutput(resized(job.pixels, job.size or (width, height)), None, 1)

    async def restore_faces(self, image: DecodedImage, options: FaceOptions) -> FaceResult:
        self.calls.append(("restore_faces", options.model))
        size = (image.width * options.upscale, image.height * options.upscale)
        return FaceResult(resized(image.pixels, size), [], 0)

    async def detect_faces(self, image: DecodedImage, options: DetectOptions) -> list[Face]:
        self.calls.append(("detect_faces", options.detector))
        return await detect_faces(image, options, centre_face)

    async def generate(self, options: GenerateOptions, image: DecodedImage | None) -> Generated:
        self.calls.append(("generate", options.prompt))
        seed = options.seed if options.seed is not None else 7
        size = (image.width, image.height) if image else (options.width, options.height)
        pixels = np.full((size[1], size[0], 3), seed % 256, np.uint8)
        return Generated(pixels, seed, False, options.checkpoint, 0.0)

    async def describe(self, image: DecodedImage, want: list[str]) -> Description:
        self.calls.append(("describe", tuple(want)))
        return Description(
            caption="a small test image" if "caption" in want else None,
            tags=[Tag("test", 0.9)] if "tags" in want else None,
            nsfw=0.01 if "nsfw" in want else None,
        )

    async def answer(self, image: DecodedImage, question: Question) -> AsyncIterator[str | Answer]:
        """ "a test answer" in three pieces, then the whole; a question of "fail midway"
        fails after the first piece (a replica lost mid-stream)."""
        self.calls.append(("answer", question.text))
        for piece in ("a", " test", " answer"):
            yield piece
            if question.text == "fail midway":
                raise ServiceUnavailable("the Vision deployment is unavailable")
        yield Answer("a test answer", len(question.text.split()), 3)

    async def mesh(self, image: DecodedImage, options: MeshOptions) -> MeshOutput:
        """A real relief mesh with the image's brightness standing in for the depth."""
        self.calls.append(("mesh", options.engine))
        rgb = to_uint8(color_plane(image))
        rows, cols = (min(side, options.resolution) for side in rgb.shape[:2])
        gray = np.asarray(Image.fromarray(rgb).convert("L").resize((cols, rows)), np.float32)
        mesh = relief(gray / 255, None, options.relief_depth)
        mesh.texture = rgb
        mesh = normalized(decimate(mesh, options.max_faces))
        return MeshOutput(
            export(mesh, options.format),
            MESH_TYPES[options.format],
            preview(mesh, 64) if options.preview else None,
            len(mesh.vertices),
            mesh.face_count,
            "none",
            {},
        )

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        self.calls.append(("convert", options.format))
        return convert_image(data, options, LIMITS)

    async def run_plan(self, image: DecodedImage, plan: Plan) -> PlanResult:
        """The steps in order on the fakes above, then the real encoder."""
        produced: dict[str, DecodedImage] = {SOURCE: image}
        texts: dict[str, Any] = {}
        for step in plan.steps:
            source = produced[step.input]
            if step.kind in IMAGE_STEPS:
                produced[step.id] = await self._step(source, step.options)
            elif isinstance(step.options, MeshOptions):
                return PlanResult(None, texts, await self.mesh(source, step.options))
            else:
                texts[step.id] = (await self.describe(source, ["caption"])).public()
        if plan.output is None:
            return PlanResult(None, texts)
        return PlanResult(encode_pixels(produced[plan.result], plan.output, LIMITS), texts)

    async def _step(self, image: DecodedImage, options: Any) -> DecodedImage:
        if isinstance(options, TileStep):
            scale = options.options.scale or options.native_scale
            size = (round(image.width * scale), round(image.height * scale))
            return DecodedImage(resized(image.pixels, size), image.bit_depth, image.source_format)
        if isinstance(options, FaceOptions):
            result = await self.restore_faces(image, options)
            return DecodedImage(result.pixels, image.bit_depth, image.source_format)
        if isinstance(options, DetectOptions):  # the real blur on the stand-in's face
            self.calls.append(("blur_faces", options.method))
            blurred, _ = await anonymize_faces(image, options, centre_face)
            return blurred
        generated = await self.generate(options, image)
        return DecodedImage(generated.pixels, 8, image.source_format)

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        loaded = [name for name in self.loaded if name not in self.unloaded]
        return {name: DeploymentReadiness(ready=True, device="cpu", loaded=loaded,
                                          resting=sorted(self.unloaded))
                for name in MODEL_DEPLOYMENTS}  # fmt: skip

    def adopt(self, spec: ModelSpec) -> None:
        self.calls.append(("adopt", spec.name))
        self.manifest.models[spec.name] = spec
        self.loaded.append(spec.name)

    async def control(
        self, deployment: str, command: ModelCommand, timeout_s: float
    ) -> tuple[int, list[ReplicaReport]]:
        """Two replicas of ``deployment`` holding its loaded models, 1 MB each; an
        unload frees that much on each."""
        self.calls.append(("control", (deployment, command.action, command.model or command.mode)))
        if command.action == "memory_mode":
            self.modes[deployment] = command.mode or "balanced"
        tasks = {name: spec.task for name, spec in self.manifest.models.items()}
        mine = [name for name in self.loaded
                if name in tasks and DEPLOYMENT_OF_TASK[tasks[name]] == deployment]  # fmt: skip
        before = len([name for name in mine if name not in self.unloaded])
        changed = command.model in mine and (command.action == "unload") != (
            command.model in self.unloaded)  # fmt: skip
        if command.model in mine and command.action == "unload":
            self.unloaded.add(command.model)
        elif command.action == "load":
            self.unloaded.discard(str(command.model))
        states = [ModelState(name=name, loaded=name not in self.unloaded,
                             memory_bytes=0 if name in self.unloaded else 1 << 20)
                  for name in mine]  # fmt: skip
        rss = (1 << 24) + sum(state.memory_bytes for state in states)
        reports = [ReplicaReport(replica=f"replica-{i}", deployment=deployment, models=states,
                                 rss_bytes=rss, rss_before=(1 << 24) + (before << 20),
                                 changed=changed,
                                 memory_mode=self.modes.get(deployment, "balanced"))
                   for i in (1, 2)]  # fmt: skip
        return len(reports), reports

    async def deployments(self) -> tuple[str, list[DeploymentView]]:
        return "pixserve", []
