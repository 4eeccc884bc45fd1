"""``POST /v1/convert``: one image re-encoded (and resized) by the Codec deployment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_ERRORS
from services.imaging.convert import CONVERT_TYPES, ConvertFormat, ResizeMode

router = APIRouter(tags=["convert"])


@router.post(
    "/v1/convert",
    response_class=Response,
    responses={200: {"content": {t: {} for t in CONVERT_TYPES.values()}}, **IMAGE_ERRORS},
)
async def create_conversion(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="PNG, JPEG, WEBP, BMP, TIFF or GIF.")],
    output_format: Annotated[ConvertFormat, Form(alias="format")] = "webp",
    quality: Annotated[int, Form(ge=1, le=100, description="Lossy formats' quality.")] = 85,
    resize: Annotated[
        ResizeMode | None,
        Form(description="fit (inside width/height), fill (crop to width x height), scale"),
    ] = None,
    width: Annotated[int | None, Form(ge=1)] = None,
    height: Annotated[int | None, Form(ge=1)] = None,
    scale: Annotated[float | None, Form(gt=0, le=8)] = None,
    keep_metadata: Annotated[
        bool, Form(description="Keep EXIF (default: stripped; ICC is always kept).")
    ] = False,
    max_bytes: Annotated[
        int | None, Form(ge=1, description="Byte budget: the best quality that fits.")
    ] = None,
    enlarge: Annotated[
        bool, Form(description="fit/fill may enlarge a smaller image (false: never).")
    ] = True,
) -> Response:
    """Convert between JPEG, PNG, WEBP and AVIF, optionally resized, within a budget."""
    fields = {"task": "convert", "format": output_format, "quality": quality, "resize": resize,
              "width": width, "height": height, "scale": scale, "keep_metadata": keep_metadata,
              "max_bytes": max_bytes, "enlarge": enlarge}  # fmt: skip
    return task_response(await runner.run(fields, await read_upload(image, settings)))
