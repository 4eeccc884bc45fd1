"""Format conversion: the Codec's work, on CPU.

Decode (refusing bad input as ``codec.decode_image`` does), apply the EXIF orientation,
resize (fit inside a box, fill a box by cropping, or scale by a factor, with Lanczos),
then encode as JPEG, PNG, WEBP or AVIF. Metadata (EXIF, XMP, comments) is dropped by
default since it can carry locations; the ICC colour profile is always kept, or the
colours would change. A byte budget makes lossy formats search the highest quality
that fits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps

from services.errors import ImageTooLarge, InvalidImage, InvalidParameter
from services.imaging.codec import (
    DecodedImage,
    ImageLimits,
    check_encodable,
    open_with_pillow,
    sniff_format,
    to_uint8,
)

ConvertFormat = Literal["jpeg", "png", "webp", "avif"]
ResizeMode = Literal["fit", "fill", "scale"]
CONVERT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}
LOSSY = ("jpeg", "webp", "avif")
MIN_BUDGET_QUALITY = 10  # below this, results are not worth sending
_PNG_MODES = {"1", "L", "LA", "I;16", "I;16B", "P", "RGB", "RGBA"}  # PNG holds as they are
_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}


@dataclass(frozen=True)
class ConvertOptions:
    """What to produce; ``width``/``height`` bound ``fit`` and size ``fill``."""

    format: ConvertFormat = "webp"
    quality: int = 85
    resize: ResizeMode | None = None
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    keep_metadata: bool = False
    max_bytes: int | None = None
    enlarge: bool = True  # False: fit/fill never make an image bigger (thumbnails)


@dataclass(frozen=True)
class Converted:
    data: bytes
    content_type: str
    width: int
    height: int
    quality: int | None  # the quality used (lossy formats), after any budget search


def convert_image(data: bytes, options: ConvertOptions, limits: ImageLimits) -> Converted:
    """Convert one image; a ``PixserveError`` names what is wrong with input or options."""
    _check_options(options, limits)
    image, icc = _screen_colours(_open(data, limits, options.keep_metadata))
    exif = image.getexif().tobytes() if options.keep_metadata else None
    return _resize_and_encode(image, options, limits, icc, exif)


def encode_pixels(image: DecodedImage, options: ConvertOptions, limits: ImageLimits) -> Converted:
    """Resize and encode decoded pixels (a pipeline's last step) exactly as
    ``convert_image`` does an upload; there is no metadata left to keep."""
    _check_options(options, limits)
    return _resize_and_encode(_to_pillow(image.pixels), options, limits, None, None)


def _resize_and_encode(
    image: Image.Image, options: ConvertOptions, limits: ImageLimits, icc: bytes | None,
    exif: bytes | None,
) -> Converted:  # fmt: skip
    """Resize, fit the format's modes, encode (within the byte budget, if any)."""
    image = _mode_for(_resize(image, options, limits), options.format)
    quality = options.quality if options.format in LOSSY else None
    encoded = _encode(image, options.format, quality, icc, exif)
    if options.max_bytes is not None and len(encoded) > options.max_bytes:
        encoded, quality = _fit_budget(image, options, icc, exif, len(encoded))
    return Converted(encoded, CONVERT_TYPES[options.format], image.width, image.height, quality)


def _to_pillow(pixels: np.ndarray) -> Image.Image:
    """Integer HxWxC pixels (C 1-4) as an 8-bit Pillow image of the matching mode."""
    values = to_uint8(pixels)
    return Image.fromarray(values[:, :, 0] if values.shape[2] == 1 else values)


def _check_options(options: ConvertOptions, limits: ImageLimits) -> None:
    if not 1 <= options.quality <= 100:
        raise InvalidParameter(f"quality must be 1-100, not {options.quality}")
    if options.resize == "fill" and not (options.width and options.height):
        raise InvalidParameter("resize=fill needs both width and height")
    if options.resize == "fit" and not (options.width or options.height):
        raise InvalidParameter("resize=fit needs width, height or both")
    if options.resize == "scale" and not options.scale:
        raise InvalidParameter("resize=scale needs scale")
    if options.scale is not None and not 0 < options.scale <= 8:
        raise InvalidParameter(f"scale must be in (0, 8], not {options.scale}")
    for name, value in (("width", options.width), ("height", options.height)):
        if value is not None and not 1 <= value <= limits.max_side:
            raise InvalidParameter(f"{name} must be 1-{limits.max_side} px, not {value}")
    if options.max_bytes is not None:
        if options.max_bytes < 1:
            raise InvalidParameter("max_bytes must be positive")
        if options.format not in LOSSY:
            raise InvalidParameter("a byte budget needs a lossy format: jpeg, webp or avif")


def _open(data: bytes, limits: ImageLimits, keep_metadata: bool) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"upload is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise InvalidImage("the upload is empty (0 bytes)")
    # the orientation is applied to the pixels, so dropping EXIF afterwards loses nothing
    return open_with_pillow(data, sniff_format(data), limits, keep_metadata)


def _screen_colours(image: Image.Image) -> tuple[Image.Image, bytes | None]:
    """The image and the ICC profile its output carries. CMYK (print) becomes RGB,
    through its own profile to sRGB when it has one: no output format here holds CMYK
    the way viewers show it, and a CMYK profile on RGB pixels would be wrong."""
    icc = image.info.get("icc_profile")
    if image.mode != "CMYK":
        return image, icc
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            if converted is not None:
                return converted, None
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: the plain conversion below
    return image.convert("RGB"), None


def _resize(image: Image.Image, options: ConvertOptions, limits: ImageLimits) -> Image.Image:
    if options.resize is None:
        return image
    width, height = image.size
    if options.resize == "scale":
        assert options.scale is not None
        size = (max(1, round(width * options.scale)), max(1, round(height * options.scale)))
    elif options.resize == "fill":
        assert options.width and options.height
        size = (options.width, options.height)
    else:  # fit inside the box, keeping the aspect ratio
        factor = min((options.width or 10**9) / width, (options.height or 10**9) / height)
        if not options.enlarge:
            factor = min(factor, 1.0)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if options.resize == "fill" and not options.enlarge:  # the box's shape, within the image
        shrink = min(width / size[0], height / size[1], 1.0)
        size = (max(1, round(size[0] * shrink)), max(1, round(size[1] * shrink)))
    if size[0] * size[1] > limits.max_pixels:
        raise ImageTooLarge(f"the result would be {size[0]}x{size[1]}, over the pixel limit")
    if options.resize == "fill":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    return image.resize(size, Image.Resampling.LANCZOS)


def _mode_for(image: Image.Image, fmt: ConvertFormat) -> Image.Image:
    """A mode the format can hold: JPEG has no alpha (white background, as viewers show
    it); palette and 16-bit images become RGB(A) for the lossy formats."""
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if fmt == "jpeg":
        if alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if fmt == "png" and image.mode in _PNG_MODES:
        return image
    if fmt == "png" and image.mode == "I":  # 32-bit gray: PNG's 16 bits, not 8
        return image.convert("I;16")
    return image.convert("RGBA" if alpha else "RGB")


def _encode(
    image: Image.Image, fmt: ConvertFormat, quality: int | None, icc: bytes | None,
    exif: bytes | None,
) -> bytes:  # fmt: skip
    check_encodable(fmt, image.width, image.height)
    buffer = io.BytesIO()
    extra: dict[str, object] = {}
    if icc:
        extra["icc_profile"] = icc
    if exif:
        extra["exif"] = exif
    if quality is not None:
        extra["quality"] = quality
    if fmt == "png":
        extra["compress_level"] = 6
    image.save(buffer, _PILLOW_FORMATS[fmt], **extra)
    return buffer.getvalue()


def _fit_budget(
    image: Image.Image, options: ConvertOptions, icc: bytes | None, exif: bytes | None,
    first_size: int,
) -> tuple[bytes, int]:  # fmt: skip
    """The highest quality whose encoding fits ``max_bytes`` (binary search), or a 422
    saying how small the smallest acceptable quality gets."""
    assert options.max_bytes is not None
    low, high = MIN_BUDGET_QUALITY, options.quality - 1
    best: tuple[bytes, int] | None = None
    smallest = first_size
    while low <= high:
        middle = (low + high) // 2
        encoded = _encode(image, options.format, middle, icc, exif)
        smallest = min(smallest, len(encoded))
        if len(encoded) <= options.max_bytes:
            best, low = (encoded, middle), middle + 1
        else:
            high = middle - 1
    if best is None:
        raise InvalidParameter(
            f"cannot fit {options.max_bytes} bytes: at quality {MIN_BUDGET_QUALITY} the "
            f"{image.width}x{image.height} {options.format} is {smallest} bytes; "
            "resize it smaller or raise max_bytes"
        )
    return best
