"""``GET /v1/presets`` and ``POST /v1/run/{preset}``: named pipelines (denoise ->
upscale -> face ..., then the Codec's encoding) run on one image."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.api.deps import (
    BackendDep,
    ManifestDep,
    MetricsDep,
    PresetsDep,
    SettingsDep,
    read_upload,
)
from services.api.schemas import IMAGE_ERRORS
from services.imaging.codec import decode_image
from services.imaging.convert import ConvertFormat
from services.pipelines.presets import Preset, PresetLibrary, step_overrides
from services.pipelines.upscale import image_limits
from services.registry import DEPLOYMENT_OF_STEP
from services.telemetry.metrics import record_image
from services.telemetry.tracing import tracer

router = APIRouter(tags=["presets"])


class StepPublic(BaseModel):
    id: str
    kind: str
    deployment: str
    input: str | None
    params: dict[str, Any]


class PresetPublic(BaseModel):
    """A preset, its steps, and whether this platform can run it now."""

    name: str
    description: str
    steps: list[StepPublic]
    output: dict[str, Any] | None
    available: bool
    missing_deployments: list[str]


class PresetListPublic(BaseModel):
    presets: list[PresetPublic]


@router.get("/v1/presets")
async def read_presets(presets: PresetsDep) -> PresetListPublic:
    """Every named preset with its steps; ``available`` is false where a deployment it
    needs is not part of this platform."""
    return PresetListPublic(presets=[_public(p, presets) for p in presets.presets.values()])


@router.post(
    "/v1/run/{preset}",
    response_class=Response,
    responses={
        200: {
            "content": {
                "image/png": {},
                "image/jpeg": {},
                "image/webp": {},
                "image/avif": {},
                "application/json": {},
            }
        },
        **IMAGE_ERRORS,
    },
)
async def run_preset(
    preset: str,
    settings: SettingsDep,
    manifest: ManifestDep,
    backend: BackendDep,
    metrics: MetricsDep,
    presets: PresetsDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    params: Annotated[
        str | None, Form(description='Step overrides as JSON: {"upscale": {"scale": 4}}.')
    ] = None,
    output_format: Annotated[ConvertFormat | None, Form(alias="format")] = None,
    quality: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> Response:
    """Run a preset on one image: the encoded image (texts of caption steps in
    ``X-Pixserve-Texts``), or JSON for presets that return text only."""
    data = await read_upload(image, settings)
    output = {k: v for k, v in (("format", output_format), ("quality", quality)) if v}
    plan = presets.compile(preset, manifest, settings, step_overrides(params), output or None)
    with tracer.start_as_current_span("pixserve.preset") as span:
        started = time.perf_counter()
        decoded = await asyncio.to_thread(decode_image, data, image_limits(settings))
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
    headers = {"X-Pixserve-Preset": plan.preset,
               "X-Pixserve-Steps": ",".join(s.id for s in plan.steps) or "encode",
               "X-Pixserve-Input-Size": f"{decoded.width}x{decoded.height}"}  # fmt: skip
    if result.image is None:
        return JSONResponse({"preset": plan.preset, "outputs": result.texts}, headers=headers)
    size = (result.image.width, result.image.height)
    record_image(metrics, f"preset:{plan.preset}", "sync", (decoded.width, decoded.height),
                 size, steps)  # fmt: skip
    headers["X-Pixserve-Output-Size"] = "{}x{}".format(*size)
    if result.texts:
        headers["X-Pixserve-Texts"] = json.dumps(result.texts, separators=(",", ":"))
    return Response(result.image.data, media_type=result.image.content_type, headers=headers)


def _public(preset: Preset, library: PresetLibrary) -> PresetPublic:
    missing = library.missing(preset)
    steps = [StepPublic(id=s.id, kind=s.kind, deployment=DEPLOYMENT_OF_STEP[s.kind],
                        input=s.input, params=s.params) for s in preset.steps]  # fmt: skip
    output = preset.output.model_dump(exclude_none=True) if preset.output else None
    return PresetPublic(
        name=preset.name,
        description=preset.description,
        steps=steps,
        output=output,
        available=not missing,
        missing_deployments=missing,
    )
