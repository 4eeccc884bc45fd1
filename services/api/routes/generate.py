"""``POST /v1/generate``: SDXL text-to-image, or image-to-image when an image is sent,
on the Diffusion deployment; the safety checker's verdict comes back as a header."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import BackendDep, MetricsDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS
from services.imaging.codec import CONTENT_TYPES, decode_image, encode_image
from services.pipelines.presets import generate_options
from services.pipelines.upscale import encoder_options, image_limits
from services.telemetry.metrics import record_image
from services.telemetry.tracing import tracer

router = APIRouter(tags=["generate"])


@router.post(
    "/v1/generate",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        **IMAGE_ERRORS,
    },
)
async def create_generation(
    settings: SettingsDep,
    backend: BackendDep,
    metrics: MetricsDep,
    prompt: Annotated[str, Form(description="What to draw (CLIP reads 77 tokens).")],
    image: Annotated[UploadFile | None, File(description="A start image: image-to-image.")] = None,
    negative_prompt: Annotated[str, Form(description="What to avoid.")] = "",
    checkpoint: Annotated[
        str | None, Form(description="Checkpoint alias (realism, anime, artistic...).")
    ] = None,
    width: Annotated[int, Form(description="Multiple of 8 (text-to-image).")] = 1024,
    height: Annotated[int, Form(description="Multiple of 8 (text-to-image).")] = 1024,
    steps: Annotated[int, Form(description="Denoising steps.")] = 30,
    guidance: Annotated[float, Form(description="Classifier-free guidance scale.")] = 5.0,
    scheduler: Annotated[
        str, Form(description="euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lightning, turbo")
    ] = "euler",
    seed: Annotated[int | None, Form(description="Same seed, same image.")] = None,
    strength: Annotated[float, Form(description="Image-to-image: how far to go (0-1].")] = 0.6,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100)] = 90,
) -> Response:
    """One image; ``X-Pixserve-Seed`` reproduces it, ``X-Pixserve-NSFW: true`` says the
    safety checker blacked it out."""
    params = {"prompt": prompt, "negative_prompt": negative_prompt, "checkpoint": checkpoint,
              "width": width, "height": height, "steps": steps, "guidance": guidance,
              "scheduler": scheduler, "seed": seed, "strength": strength}  # fmt: skip
    options = generate_options(params, settings, image_to_image=image is not None)
    with tracer.start_as_current_span("pixserve.generate") as span:
        started = time.perf_counter()
        start = None
        if image is not None:
            data = await read_upload(image, settings)
            start = await asyncio.to_thread(decode_image, data, image_limits(settings))
        result = await backend.generate(options, start)
        encoded = await asyncio.to_thread(
            encode_image, result.pixels, output_format, quality, encoder_options(settings)
        )
        height_out, width_out = result.pixels.shape[:2]
        span.set_attributes({"pixserve.model": result.checkpoint, "pixserve.steps": options.steps,
                             "pixserve.output_size": f"{width_out}x{height_out}"})  # fmt: skip
    size = (width_out, height_out)
    record_image(metrics, f"sdxl:{result.checkpoint}", "sync", size, size,
                 {"generate": time.perf_counter() - started})  # fmt: skip
    headers = {
        "X-Pixserve-Checkpoint": result.checkpoint,
        "X-Pixserve-Seed": str(result.seed),
        "X-Pixserve-NSFW": "true" if result.nsfw else "false",
        "X-Pixserve-Output-Size": f"{width_out}x{height_out}",
    }
    return Response(encoded, media_type=CONTENT_TYPES[output_format], headers=headers)
