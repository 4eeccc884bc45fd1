"""``GET /v1/presets`` and ``POST /v1/run/{preset}``: named pipelines (denoise ->
upscale -> face ..., then the Codec's encoding) run on one image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from services.api.deps import (
    ManifestDep,
    PresetsDep,
    ReadinessDep,
    RunnerDep,
    SettingsDep,
    read_upload,
    task_response,
)
from services.api.schemas import IMAGE_ERRORS, KeepMetadata
from services.errors import PixserveError
from services.imaging.convert import ConvertFormat
from services.pipelines.presets import Preset, PresetLibrary, step_overrides
from services.pipelines.tasks import PresetTask, TaskContext, plan_task
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
    available: bool = Field(
        description="Whether it can run now: its deployments are part "
        "of this platform and its models are loaded."
    )
    missing_deployments: list[str]
    missing_models: list[str] = Field(description="Models it needs that are not loaded.")
    reason: str | None = Field(default=None, description="Why it cannot run, when it cannot.")


class PresetListPublic(BaseModel):
    presets: list[PresetPublic]


@router.get("/v1/presets")
async def read_presets(
    presets: PresetsDep, settings: SettingsDep, manifest: ManifestDep, readiness: ReadinessDep
) -> PresetListPublic:
    """Every named preset with its steps; ``available`` is false, with the reason, where
    a deployment it needs is not part of this platform, its checkpoint is not
    configured, or a model it needs is not loaded (as the deployments last reported)."""
    loaded = None if readiness is None else {
        name for state in readiness.values() for name in state.loaded}  # fmt: skip
    context = TaskContext(manifest, settings, presets)
    return PresetListPublic(presets=[_public(p, presets, context, loaded)
                                     for p in presets.presets.values()])  # fmt: skip


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
    keep_metadata: KeepMetadata = False,
) -> Response:
    """Run a preset on one image: the encoded image (texts of caption steps in
    ``X-Pixserve-Texts``), or JSON for presets that return text only."""
    fields = {"task": "preset", "preset": preset, "params": step_overrides(params),
              "format": output_format, "quality": quality,
              "keep_metadata": keep_metadata}  # fmt: skip
    result = await runner.run(fields, await read_upload(image, settings))
    if result.content_type == JSON_TYPE:
        return JSONResponse({"preset": preset, "outputs": result.texts or {}},
                            headers=result.headers)  # fmt: skip
    return task_response(result)


def _public(
    preset: Preset, library: PresetLibrary, context: TaskContext, loaded: set[str] | None
) -> PresetPublic:
    """The preset and what keeps it from running: deployments, configuration, models
    (unknown before the deployments first report: then only the first two count)."""
    missing = library.missing(preset)
    reason, absent = None, []
    if missing:
        reason = f"needs the {', '.join(missing)} deployment(s), which this platform lacks"
    else:
        try:
            models = plan_task(PresetTask(preset=preset.name), context).models
        except PixserveError as exc:
            reason = exc.message
        else:
            absent = [name for name in models if loaded is not None and name not in loaded]
            if absent:
                reason = f"needs {', '.join(absent)}, not loaded (see GET /v1/models)"
    steps = [StepPublic(id=s.id, kind=s.kind, deployment=DEPLOYMENT_OF_STEP[s.kind],
                        input=s.input, params=s.params) for s in preset.steps]  # fmt: skip
    output = preset.output.model_dump(exclude_none=True) if preset.output else None
    return PresetPublic(
        name=preset.name,
        description=preset.description,
        steps=steps,
        output=output,
        available=reason is None,
        missing_deployments=missing,
        missing_models=absent,
        reason=reason,
    )
