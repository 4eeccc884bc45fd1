"""Decode and validate uploaded images; encode results.

Decoding refuses bad input before it costs anything: the byte limit first, then the
file signature, then the header's dimensions (so a decompression bomb is refused
before its pixels are decoded). Pixels travel as HxWxC uint8 arrays (uint16 for 16-bit
inputs, which keep their precision end to end): a quarter of float32's bytes between
deployments; only a model's own device turns them into floats.

Encoders are chosen for speed at equal output (docs/benchmarks.md, bench_codecs.py):
Pillow's libjpeg-turbo for JPEG, fpng for 8-bit RGB/RGBA PNG (lossless, about ten
times zlib's speed at level 1, files about 8 % larger), zlib at a set level otherwise,
and WEBP at a set method (0 is fastest).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import cv2
import fpng
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from services.config import Settings
from services.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedFormat

OutputFormat = Literal["png", "jpeg", "webp"]
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ACCEPTED_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("png", _PNG_SIGNATURE, 0),
    ("jpeg", b"\xff\xd8\xff", 0),
    ("webp", b"WEBP", 8),
    ("bmp", b"BM", 0),
    ("tiff", b"II*\x00", 0),
    ("tiff", b"MM\x00*", 0),
    ("gif", b"GIF8", 0),
)
# the Pillow decoders each sniffed kind may use: the header is decoded by the format's
# own plugin, so a file of another format behind an accepted prefix is refused
_PILLOW_DECODERS: dict[str, list[str]] = {
    "png": ["PNG"], "jpeg": ["JPEG"], "webp": ["WEBP"], "bmp": ["BMP"],
    "tiff": ["TIFF"], "gif": ["GIF"],
}  # fmt: skip
_REFUSED_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("PDF", b"%PDF"),
    ("SVG", b"<svg"),
    ("SVG/XML", b"<?xml"),
    ("HEIF/AVIF", b"ftyp"),
    ("Photoshop PSD", b"8BPS"),
    ("ZIP archive", b"PK\x03\x04"),
)
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
LUMA = (0.299, 0.587, 0.114)  # RGB -> gray weights (BT.601, Pillow's "L"), one for all

MAX_SIDES = {"webp": 16383, "jpeg": 65535}  # what each format can hold, per side


@dataclass(frozen=True)
class ImageLimits:
    """What decode accepts: bytes, pixels, and the longest side."""

    max_bytes: int
    max_pixels: int
    max_side: int


class EncoderOptions(BaseModel):
    """How fast encoders run against how small they write (from Settings)."""

    model_config = ConfigDict(frozen=True)

    png_compress_level: int | None = Field(default=None, ge=0, le=9)  # None: fpng
    webp_method: int = Field(default=0, ge=0, le=6)


FAST_ENCODERS = EncoderOptions()


@dataclass(frozen=True)
class DecodedImage:
    """Pixels as HxWxC uint8 (uint16 when ``bit_depth`` is 16); C is 1 (gray), 2
    (gray+alpha), 3 or 4."""

    pixels: np.ndarray
    bit_depth: int
    source_format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def is_color(self) -> bool:
        return self.channels >= 3


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Validate and decode ``data``; raise a ``PixserveError`` naming what is wrong."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"upload is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    if not data:
        raise InvalidImage("the upload is empty (0 bytes)")
    kind = sniff_format(data)
    if kind == "png":
        check_dimensions(*_png_dimensions(data), limits)
        if _png_bit_depth(data) == 16:
            return _decode_png16(data)
    return _decode_with_pillow(data, kind, limits)


def sniff_format(data: bytes) -> str:
    """Name the format from the file signature, refusing known non-image formats."""
    for kind, signature, offset in _ACCEPTED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return kind
    head = data[:64].lstrip()
    for name, signature in _REFUSED_SIGNATURES:
        if signature in head[:16]:
            raise UnsupportedFormat(
                f"{name} files are not supported; send PNG, JPEG, WEBP, BMP, TIFF or GIF"
            )
    raise InvalidImage("the upload is not an image (unrecognised file signature)")


def check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    """Refuse zero-size, over-long or over-large images before decoding pixels."""
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has zero size ({width}x{height})")
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"image is {width}x{height}; the longest side allowed is {limits.max_side} px"
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels"
        )


def _png_bit_depth(data: bytes) -> int:
    return data[24] if len(data) > 24 else 8


def _png_dimensions(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidImage("PNG header is truncated or malformed")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _decode_png16(data: bytes) -> DecodedImage:
    """16-bit PNGs go through OpenCV: Pillow truncates 16-bit colour to 8 bits."""
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InvalidImage("PNG data is truncated or corrupt")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    depth = 16 if array.dtype == np.uint16 else 8
    return DecodedImage(np.ascontiguousarray(array), depth, "png")


def _decode_with_pillow(data: bytes, kind: str, limits: ImageLimits) -> DecodedImage:
    return DecodedImage(*_pillow_to_array(open_with_pillow(data, kind, limits)), kind)


def open_with_pillow(
    data: bytes, kind: str, limits: ImageLimits, keep_metadata: bool = False
) -> Image.Image:
    """Open with the sniffed format's own decoder, check the dimensions before any pixel
    is decoded, decode, and apply the EXIF orientation to the pixels. The ICC profile
    stays in ``.info``; the rest of the metadata (EXIF, XMP, comments, text chunks) is
    dropped unless ``keep_metadata``, since encoders copy ``.info`` into their output."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data), formats=_PILLOW_DECODERS[kind])
            check_dimensions(opened.width, opened.height, limits)
            opened.load()
            image = ImageOps.exif_transpose(opened)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from exc
        except UnidentifiedImageError:
            raise InvalidImage(f"the data is not a valid {kind.upper()} file") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(f"{kind.upper()} data is truncated or corrupt: {exc}") from exc
    icc = opened.info.get("icc_profile")
    if not keep_metadata:
        image.info.clear()
    if icc:
        image.info["icc_profile"] = icc
    return image


def _pillow_to_array(image: Image.Image) -> tuple[np.ndarray, int]:
    """Convert any Pillow mode to gray/gray+alpha/RGB/RGBA uint8 (uint16 for 16-bit gray)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
        return array[:, :, None], 16
    has_alpha = image.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    is_color = image.mode not in _GRAY_MODES
    if image.mode == "P":
        is_color = True
    target = {(True, True): "RGBA", (True, False): "RGB", (False, True): "LA"}.get(
        (is_color, has_alpha), "L"
    )
    array = np.asarray(image.convert(target), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array, 8


def check_encodable(fmt: str, width: int, height: int) -> None:
    """Refuse a size the format cannot hold (WEBP 16383 px a side, JPEG 65535)."""
    limit = MAX_SIDES.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise ImageTooLarge(f"format: {fmt} holds at most {limit} px a side and the output is "
                            f"{width}x{height}; ask for png or a smaller size")  # fmt: skip


def encode_image(
    pixels: np.ndarray, fmt: OutputFormat, quality: int = 90,
    encoders: EncoderOptions = FAST_ENCODERS,
) -> bytes:  # fmt: skip
    """Encode HxWxC uint8/uint16 pixels; PNG keeps 16 bits when the pixels have them."""
    check_encodable(fmt, pixels.shape[1], pixels.shape[0])
    if fmt == "png" and pixels.dtype == np.uint16:
        return _encode_png16(pixels)
    array = to_uint8(pixels)
    if fmt == "png" and encoders.png_compress_level is None and array.shape[2] in (3, 4):
        return bytes(fpng.from_ndarray(np.ascontiguousarray(array)))
    image = _array_to_pillow(array)
    buffer = io.BytesIO()
    if fmt == "jpeg":
        _flatten_alpha(image).save(buffer, "JPEG", quality=quality)
    elif fmt == "webp":
        if image.mode == "LA":
            image = image.convert("RGBA")
        image.save(buffer, "WEBP", quality=quality, method=encoders.webp_method)
    else:
        image.save(buffer, "PNG", compress_level=encoders.png_compress_level or 1)
    return buffer.getvalue()


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels as they are; 16-bit ones rounded to 8 bits."""
    if pixels.dtype == np.uint8:
        return pixels
    scaled: np.ndarray = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return scaled


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Integer pixels as float32 in [0, 1], for CPU code that computes in floats."""
    peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
    values: np.ndarray = pixels.astype(np.float32) / peak
    return values


def from_float(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float pixels in [0, 1] back to uint8 (uint16 for 16-bit)."""
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    values: np.ndarray = (np.clip(pixels, 0.0, 1.0) * peak + 0.5).astype(dtype)
    return values


def _array_to_pillow(array: np.ndarray) -> Image.Image:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white, as browsers and viewers do."""
    if image.mode not in ("RGBA", "LA"):
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _encode_png16(array: np.ndarray) -> bytes:
    channels = array.shape[2]
    if channels == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif channels == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif channels == 2:
        rgb = np.repeat(array[:, :, :1], 3, axis=2)
        array = cv2.cvtColor(np.concatenate([rgb, array[:, :, 1:]], axis=2), cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise InvalidImage("could not encode the result as 16-bit PNG")
    return bytes(encoded.tobytes())


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(settings.max_upload_bytes, settings.max_input_pixels, settings.max_side)


def encoder_options(settings: Settings) -> EncoderOptions:
    return EncoderOptions(png_compress_level=settings.png_compress_level,
                          webp_method=settings.webp_method)  # fmt: skip


def color_plane(image: DecodedImage) -> np.ndarray:
    """The image's colour as HxWx3 (gray repeated), its own dtype."""
    if image.is_color:
        return image.pixels[:, :, :3]
    return np.repeat(image.pixels[:, :, :1], 3, axis=2)
