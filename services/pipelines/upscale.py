"""The upscale pipeline: plan the output, tile, run tiles on a backend, stitch, resize.

Everything but the forward pass happens here, outside the GPU deployment. Colour and
alpha tiles travel in one call (alpha is upscaled by the model as a gray image, then
recombined); gray images run as RGB and come back as gray; any output scale or target
size is reached by a final Lanczos/area resize of the model's native output.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from services.config import Settings
from services.errors import ImageTooLarge, InvalidParameter
from services.imaging.codec import (
    CONTENT_TYPES,
    DecodedImage,
    ImageLimits,
    OutputFormat,
    decode_image,
    encode_image,
)
from services.imaging.tiling import plan_grid, split_tiles, stitch_tiles
from services.telemetry.tracing import tracer

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class TileBackend(Protocol):
    """Whatever runs the model over tile stacks: a Serve handle, or the engine itself."""

    async def upscale_tiles(self, model: str, tiles: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class UpscaleOptions:
    """What a client asks for: model, scale or target size, and the output encoding."""

    model: str
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    output_format: OutputFormat = "png"
    quality: int = 90


@dataclass(frozen=True)
class UpscaleResult:
    """The upscaled pixels and what it took (tile count, sizes) for headers and traces."""

    pixels: np.ndarray
    tiles: int


@dataclass(frozen=True)
class EncodedResult:
    """The encoded output and facts about the run, for response headers."""

    data: bytes
    content_type: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    tiles: int
    step_seconds: dict[str, float]  # decode, upscale, encode


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(settings.max_upload_bytes, settings.max_input_pixels, settings.max_side)


async def upscale_upload(
    data: bytes,
    options: UpscaleOptions,
    native_scale: int,
    backend: TileBackend,
    settings: Settings,
) -> EncodedResult:
    """Decode, upscale and encode an upload; CPU work runs off the event loop. Each step
    is a span; the sizes, model and tile count are attributes of the enclosing one."""
    with tracer.start_as_current_span("pixserve.upscale") as span:
        started = time.perf_counter()
        with tracer.start_as_current_span("pixserve.decode"):
            image = await asyncio.to_thread(decode_image, data, image_limits(settings))
        decoded = time.perf_counter()
        with tracer.start_as_current_span("pixserve.model"):
            result = await upscale(image, options, native_scale, backend, settings)
        upscaled = time.perf_counter()
        with tracer.start_as_current_span("pixserve.encode"):
            encoded = await asyncio.to_thread(
                encode_image, result.pixels, options.output_format, options.quality,
                image.bit_depth,
            )  # fmt: skip
        height, width = result.pixels.shape[:2]
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
) -> UpscaleResult:
    """Upscale ``image`` through ``backend``; the result has the planned output size."""
    target = output_size(image.width, image.height, native_scale, options, settings)
    grid = plan_grid(image.height, image.width, settings.tile_size, settings.tile_pad)
    planes = [color_plane(image)]
    if image.has_alpha:
        planes.append(np.repeat(image.pixels[:, :, -1:], 3, axis=2))
    tiles = np.concatenate([split_tiles(plane, grid) for plane in planes])
    outputs = await backend.upscale_tiles(options.model, tiles)
    stitched = [stitch_tiles(part, grid, native_scale) for part in np.split(outputs, len(planes))]
    pixels = recombine(image, stitched)
    return UpscaleResult(resize(pixels, target), len(tiles))


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWxC float pixels to ``size`` (w, h): Lanczos up, area down."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return pixels
    shrinking = size[0] * size[1] < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(pixels, size, interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return np.clip(resized, 0.0, 1.0)


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


def color_plane(image: DecodedImage) -> np.ndarray:
    if image.is_color:
        return image.pixels[:, :, :3]
    return np.repeat(image.pixels[:, :, :1], 3, axis=2)


def recombine(image: DecodedImage, stitched: list[np.ndarray]) -> np.ndarray:
    color = stitched[0]
    if not image.is_color:
        color = (color @ _LUMA)[:, :, None]
    if not image.has_alpha:
        return color
    alpha = stitched[1].mean(axis=2, keepdims=True)
    return np.concatenate([color, alpha], axis=2)
