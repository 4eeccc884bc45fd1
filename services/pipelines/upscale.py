"""The upscale pipeline as the API sees it: decode, size the output, send the whole
image to the model deployment, encode.

The Ingress does the cheap parts in worker threads (decode, encode) and sends the
decoded uint8 image once; the model deployment pads, tiles, batches, stitches,
recombines gray and alpha planes and resizes on its device (services/models/upscaler.py)
and sends back the output's pixels, or, on CUDA with a JPEG output, its bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.config import Settings
from services.errors import ImageTooLarge, InvalidParameter
from services.imaging.codec import (
    CONTENT_TYPES,
    DecodedImage,
    OutputFormat,
    check_encodable,
    decode_image,
    encode_image,
    encoder_options,
    image_limits,
)
from services.models.tile_io import TileJob, TileOutput
from services.pipelines.budget import NO_BUDGET, Budget
from services.telemetry.tracing import current_traceparent, tracer


class TileBackend(Protocol):
    """Whatever runs a tile model on a whole image: a Serve handle, or the engine itself."""

    async def upscale_image(self, job: TileJob) -> TileOutput: ...


@dataclass(frozen=True)
class UpscaleOptions:
    """What a client asks for: model, scale or target size, and the output encoding."""

    model: str
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    output_format: OutputFormat = "png"
    quality: int = 90
    noise_level: float | None = None  # FFDNet denoising: the noise sigma, 0-255 scale


@dataclass(frozen=True)
class UpscaleResult:
    """The upscaled pixels (or the device's JPEG of them), the output size and the tile
    count, for headers and traces."""

    pixels: np.ndarray | None
    jpeg: bytes | None
    size: tuple[int, int]
    tiles: int
    fallback: str | None = None  # ``cpu``: run again on the CPU fallback deployment


@dataclass(frozen=True)
class EncodedResult:
    """The encoded output and facts about the run, for response headers."""

    data: bytes
    content_type: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    tiles: int
    step_seconds: dict[str, float]  # decode, upscale, encode
    fallback: str | None = None


async def upscale_upload(
    data: bytes,
    options: UpscaleOptions,
    native_scale: int,
    backend: TileBackend,
    settings: Settings,
    budget: Budget = NO_BUDGET,
) -> EncodedResult:
    """Decode, upscale and encode an upload; CPU work runs off the event loop. Each step
    is a span; the sizes, model and tile count are attributes of the enclosing one. An
    input whose size puts it over ``budget`` is refused before the model runs."""
    with tracer.start_as_current_span("pixserve.upscale") as span:
        started = time.perf_counter()
        with tracer.start_as_current_span("pixserve.decode"):
            image = await asyncio.to_thread(decode_image, data, image_limits(settings))
            budget.check(image.width, image.height)
        decoded = time.perf_counter()
        with tracer.start_as_current_span("pixserve.model"):
            result = await upscale(image, options, native_scale, backend, settings,
                                   jpeg=options.output_format == "jpeg")  # fmt: skip
        upscaled = time.perf_counter()
        with tracer.start_as_current_span("pixserve.encode"):
            encoded = result.jpeg
            if encoded is None:
                encoded = await asyncio.to_thread(
                    encode_image, _pixels(result), options.output_format, options.quality,
                    encoder_options(settings),
                )  # fmt: skip
        width, height = result.size
        span.set_attributes({
            "pixserve.model": options.model, "pixserve.tiles": result.tiles,
            "pixserve.input_size": f"{image.width}x{image.height}",
            "pixserve.output_size": f"{width}x{height}",
        })  # fmt: skip
    steps = {"decode": decoded - started, "upscale": upscaled - decoded,
             "encode": time.perf_counter() - upscaled}  # fmt: skip
    return EncodedResult(
        encoded,
        CONTENT_TYPES[options.output_format],
        (image.width, image.height),
        (width, height),
        result.tiles,
        steps,
        result.fallback,
    )


def output_size(
    width: int, height: int, native_scale: int, options: UpscaleOptions, settings: Settings
) -> tuple[int, int]:
    """Resolve scale/width/height into an output size, refusing what is out of range.

    The pixel limit applies to the model's native output as well as to the final
    size: both exist in memory at once, whatever the requested size.
    """
    if options.scale is not None and (options.width or options.height):
        raise InvalidParameter("give either scale or width/height, not both")
    if options.width or options.height:
        size = _target_size(width, height, options.width, options.height)
    else:
        scale = float(native_scale if options.scale is None else options.scale)
        if not 1.0 <= scale <= settings.max_scale:
            raise InvalidParameter(
                f"scale {scale:g} is out of range; allowed 1 to {settings.max_scale:g}"
            )
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    native = (width * native_scale, height * native_scale)
    for kind, (out_w, out_h) in (("output", size), ("model output", native)):
        if out_w * out_h > settings.max_output_pixels:
            raise ImageTooLarge(
                f"{kind} {out_w}x{out_h} is over the limit of {settings.max_output_pixels} "
                "pixels; send a smaller image"
            )
    return size


async def upscale(
    image: DecodedImage,
    options: UpscaleOptions,
    native_scale: int,
    backend: TileBackend,
    settings: Settings,
    jpeg: bool = False,
) -> UpscaleResult:
    """Upscale ``image`` on ``backend`` to the planned output size; ``jpeg`` lets the
    model's device encode it (it does on CUDA; elsewhere the pixels come back)."""
    target = output_size(image.width, image.height, native_scale, options, settings)
    check_encodable(options.output_format, *target)  # before the model's work, not after
    job = TileJob(options.model, image.pixels, target, options.quality if jpeg else None,
                  traceparent=current_traceparent(), noise_level=options.noise_level)  # fmt: skip
    output = await backend.upscale_image(job)
    return UpscaleResult(output.pixels, output.jpeg, target, output.tiles, output.fallback)


def _pixels(result: UpscaleResult) -> np.ndarray:
    if result.pixels is None:
        raise RuntimeError("the model deployment sent no pixels")
    return result.pixels


def _target_size(
    width: int, height: int, target_w: int | None, target_h: int | None
) -> tuple[int, int]:
    for value in (target_w, target_h):
        if value is not None and value < 1:
            raise InvalidParameter(f"target size must be positive, got {value}")
    if target_w and target_h:
        return target_w, target_h
    if target_w:
        return target_w, max(1, round(height * target_w / width))
    assert target_h is not None
    return max(1, round(width * target_h / height)), target_h
