"""``POST /v1/convert``: one image re-encoded (and resized) by the Codec deployment."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import BackendDep, MetricsDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS
from services.imaging.convert import CONVERT_TYPES, ConvertFormat, ConvertOptions, ResizeMode
from services.telemetry.metrics import record_image

router = APIRouter(tags=["convert"])


@router.post(
    "/v1/convert",
    response_class=Response,
    responses={200: {"content": {t: {} for t in CONVERT_TYPES.values()}}, **IMAGE_ERRORS},
)
async def create_conversion(
    settings: SettingsDep,
    backend: BackendDep,
    metrics: MetricsDep,
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
    data = await read_upload(image, settings)
    options = ConvertOptions(
        output_format, quality, resize, width, height, scale, keep_metadata, max_bytes, enlarge
    )
    started = time.perf_counter()
    result = await backend.convert(data, options)
    size = (result.width, result.height)
    record_image(metrics, "codec", "sync", size, size,
                 {"convert": time.perf_counter() - started})  # fmt: skip
    headers = {"X-Pixserve-Output-Size": f"{result.width}x{result.height}"}
    if result.quality is not None:
        headers["X-Pixserve-Quality"] = str(result.quality)
    return Response(result.data, media_type=result.content_type, headers=headers)
