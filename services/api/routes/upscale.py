"""``POST /v1/upscale``: one image in, the upscaled image out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_CONTENT, IMAGE_ERRORS, KeepMetadata

router = APIRouter(tags=["upscale"])


@router.post(
    "/v1/upscale",
    response_class=Response,
    responses=IMAGE_CONTENT | IMAGE_ERRORS,
)
async def create_upscale(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    model: Annotated[str | None, Form(description="Model name; see GET /v1/models.")] = None,
    scale: Annotated[float | None, Form(description="Output scale, e.g. 2.5.")] = None,
    width: Annotated[int | None, Form(ge=1, description="Target width in px.")] = None,
    height: Annotated[int | None, Form(ge=1, description="Target height in px.")] = None,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WEBP quality.")] = 90,
    keep_metadata: KeepMetadata = False,
) -> Response:
    """Upscale one image with a Real-ESRGAN model and return it encoded."""
    fields = {"task": "upscale", "model": model, "scale": scale, "width": width,
              "height": height, "format": output_format, "quality": quality,
              "keep_metadata": keep_metadata}  # fmt: skip
    return task_response(await runner.run(fields, await read_upload(image, settings)))
