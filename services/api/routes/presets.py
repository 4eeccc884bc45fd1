"""``GET /v1/presets`` and ``POST /v1/run/{preset}``: named pipelines (denoise ->
upscale -> face ..., then the Codec's encoding) run on one image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.api.deps import PresetsDep, RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_ERRORS
from services.imaging.convert import ConvertFormat
from services.pipelines.presets import Preset, PresetLibrary, step_overrides
from services.pipelines.usecases import JSON_TYPE
from services.registry import DEPLOYMENT_OF_STEP

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
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    params: Annotated[
        str | None, Form(description='Step overrides as JSON: {"upscale": {"scale": 4}}.')
    ] = None,
    output_format: Annotated[ConvertFormat | None, Form(alias="format")] = None,
    quality: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> Response:
    """Run a preset on one image: the encoded image (texts of caption steps in
    ``X-Pixserve-Texts``), or JSON for presets that return text only."""
    fields = {"task": "preset", "preset": preset, "params": step_overrides(params),
              "format": output_format, "quality": quality}  # fmt: skip
    result = await runner.run(fields, await read_upload(image, settings))
    if result.content_type == JSON_TYPE:
        return JSONResponse({"preset": preset, "outputs": result.texts or {}},
                            headers=result.headers)  # fmt: skip
    return task_response(result)


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
