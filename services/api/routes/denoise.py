"""``POST /v1/denoise``: one image through a denoising model (SCUNet, DnCNN, FFDNet) on
the Denoiser deployment, tiled and batched like upscaling, at the same size."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_CONTENT, IMAGE_ERRORS, KeepMetadata
from services.models.tile_io import MAX_NOISE_LEVEL

router = APIRouter(tags=["denoise"])


@router.post(
    "/v1/denoise",
    response_class=Response,
    responses=IMAGE_CONTENT | IMAGE_ERRORS,
)
async def create_denoise(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    model: Annotated[
        str | None, Form(description="A denoise model; see GET /v1/models (task).")
    ] = None,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WEBP quality.")] = 90,
    noise_level: Annotated[
        float | None,
        Form(
            ge=0,
            le=MAX_NOISE_LEVEL,
            description="FFDNet models only: the noise's sigma on 0-255 (default 25).",
        ),
    ] = None,
    keep_metadata: KeepMetadata = False,
) -> Response:
    """Remove noise; the output has the input's size."""
    fields = {"task": "denoise", "model": model, "format": output_format, "quality": quality,
              "noise_level": noise_level, "keep_metadata": keep_metadata}  # fmt: skip
    return task_response(await runner.run(fields, await read_upload(image, settings)))
