"""Test images: scikit-image's bundled astronaut, and encoders for edge cases."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
from skimage import data


def astronaut(size: int | None = None) -> np.ndarray:
    """The astronaut photo as uint8 RGB, optionally resized to ``size`` square."""
    image = np.asarray(data.astronaut())
    if size is not None:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
    return image


def encode(array: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **params)
    return buffer.getvalue()


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (RGB, RGBA or gray) from a uint16 array, via OpenCV."""
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return bytes(encoded.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + valid IHDR claiming ``width x height``, and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    )


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)
