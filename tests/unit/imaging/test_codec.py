"""Decode refuses every kind of bad input with a named error; encode round-trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.errors import (
    ImageTooLarge,
    InvalidImage,
    PayloadTooLarge,
    PixserveError,
    UnsupportedFormat,
)
from services.imaging.codec import ImageLimits, decode_image, encode_image
from tests.utils.images import astronaut, encode, png16, png_header_only

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=1_000_000, max_side=4096)


def test_decodes_rgb_png_and_jpeg() -> None:
    pixels = astronaut(64)
    png = decode_image(encode(pixels), LIMITS)
    assert png.pixels.shape == (64, 64, 3) and png.bit_depth == 8
    assert png.pixels.dtype == np.uint8 and np.array_equal(png.pixels, pixels)
    jpeg = decode_image(encode(pixels, "JPEG", quality=95), LIMITS)
    assert jpeg.source_format == "jpeg" and jpeg.pixels.shape == (64, 64, 3)


def test_keeps_gray_and_alpha() -> None:
    gray = decode_image(encode(astronaut(32)[:, :, 0]), LIMITS)
    assert gray.pixels.shape == (32, 32, 1) and not gray.is_color
    rgba = np.dstack([astronaut(32), np.full((32, 32), 128, np.uint8)])
    decoded = decode_image(encode(rgba), LIMITS)
    assert decoded.has_alpha and decoded.pixels.shape[2] == 4
    assert (decoded.pixels[:, :, 3] == 128).all()


def test_sixteen_bit_png_keeps_precision() -> None:
    values = np.random.default_rng(0).integers(0, 65535, (16, 16, 3), dtype=np.uint16)
    decoded = decode_image(png16(values), LIMITS)
    assert decoded.bit_depth == 16
    assert decoded.pixels.dtype == np.uint16 and np.array_equal(decoded.pixels, values)
    again = decode_image(encode_image(decoded.pixels, "png"), LIMITS)
    assert np.array_equal(again.pixels, decoded.pixels)


def test_sixteen_bit_gray_png() -> None:
    values = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257
    decoded = decode_image(png16(values), LIMITS)
    assert decoded.pixels.shape == (16, 16, 1) and decoded.bit_depth == 16


def test_applies_exif_orientation() -> None:
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), LIMITS).pixels.shape[:2] == (20, 10)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", InvalidImage, "empty"),
        (b"hello, this is text", InvalidImage, "not an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", UnsupportedFormat, "SVG"),
        (b"%PDF-1.7\n...", UnsupportedFormat, "PDF"),
        (png_header_only(0, 10), InvalidImage, "zero size"),
        (png_header_only(100_000, 100_000), ImageTooLarge, "longest side"),
        (png_header_only(2000, 2000), ImageTooLarge, "pixels"),
    ],
)
def test_refuses_bad_input(data: bytes, error: type[PixserveError], words: str) -> None:
    with pytest.raises(error, match=words):
        decode_image(data, LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_refuses_truncated_files(fmt: str) -> None:
    data = encode(astronaut(64), fmt)
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_refuses_over_byte_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="limit"):
        decode_image(b"\x89PNG" + b"0" * 100, ImageLimits(50, 10, 10))


def test_refuses_decompression_bomb_before_decoding() -> None:
    """A small file that expands to a huge image is refused from its header."""
    bomb = encode(np.zeros((1500, 1500), np.uint8))
    assert len(bomb) < 10_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, LIMITS)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_encode_every_layout(fmt: str, channels: int) -> None:
    pixels = np.random.default_rng(channels).integers(0, 256, (9, 7, channels)).astype(np.uint8)
    decoded = decode_image(encode_image(pixels, fmt, quality=80), LIMITS)  # type: ignore[arg-type]
    assert decoded.pixels.shape[:2] == (9, 7)


def test_a_size_the_format_cannot_hold_is_a_named_413() -> None:
    """WEBP holds 16383 px a side: a wider output is refused naming the format, never a
    500 from the encoder (the same image as PNG encodes)."""
    wide = np.zeros((1, 16384, 3), np.uint8)
    with pytest.raises(ImageTooLarge, match="format: webp holds at most 16383 px"):
        encode_image(wide, "webp")
    assert encode_image(wide, "png").startswith(b"\x89PNG")
