"""``POST /v1/upscale``: one image in, the upscaled image out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import BackendDep, ManifestDep, MetricsDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS
from services.config import Settings
from services.models.manifest import ModelSpec
from services.pipelines.upscale import TileBackend, UpscaleOptions, upscale_upload
from services.telemetry.metrics import PlatformMetrics, record_image

router = APIRouter(tags=["upscale"])


@router.post(
    "/v1/upscale",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        **IMAGE_ERRORS,
    },
)
async def create_upscale(
    settings: SettingsDep,
    manifest: ManifestDep,
    backend: BackendDep,
    metrics: MetricsDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    model: Annotated[str | None, Form(description="Model name; see GET /v1/models.")] = None,
    scale: Annotated[float | None, Form(description="Output scale, e.g. 2.5.")] = None,
    width: Annotated[int | None, Form(ge=1, description="Target width in px.")] = None,
    height: Annotated[int | None, Form(ge=1, description="Target height in px.")] = None,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WEBP quality.")] = 90,
) -> Response:
    """Upscale one image with a Real-ESRGAN model and return it encoded."""
    data = await read_upload(image, settings)
    spec = manifest.for_task(model or settings.default_model, "upscale")
    options = UpscaleOptions(spec.name, scale, width, height, output_format, quality)
    return await run_tile_model(data, options, spec, backend, settings, metrics)


async def run_tile_model(
    data: bytes,
    options: UpscaleOptions,
    spec: ModelSpec,
    backend: TileBackend,
    settings: Settings,
    metrics: PlatformMetrics,
) -> Response:
    """Run one upload through a tile model (upscale or denoise), count it, and answer
    the encoded image with the model, sizes and tile count as headers."""
    result = await upscale_upload(data, options, spec.scale, backend, settings)
    record_image(metrics, spec.name, "sync", result.input_size, result.output_size,
                 result.step_seconds)  # fmt: skip
    headers = {
        "X-Pixserve-Model": spec.name,
        "X-Pixserve-Input-Size": "{}x{}".format(*result.input_size),
        "X-Pixserve-Output-Size": "{}x{}".format(*result.output_size),
        "X-Pixserve-Tiles": str(result.tiles),
    }
    return Response(result.data, media_type=result.content_type, headers=headers)
