"""Decode and convert under fuzzing: whatever the bytes, the answer is pixels within the
limits or a named ``PixserveError`` with a 4xx status; never another exception, never a
hang (the test's timeout bounds each run). Hypothesis mutates real files of every
accepted format (bit flips, truncation, insertions, rewritten header sizes), and a
decompression bomb in each format is refused from its header, before its pixels exist.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.errors import ImageTooLarge, PixserveError
from services.imaging import codec
from services.imaging.codec import ImageLimits, decode_image
from services.imaging.convert import ConvertOptions, convert_image
from tests.utils.images import astronaut

pytestmark = pytest.mark.timeout(600)

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=250_000, max_side=1024)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _seeds() -> dict[str, bytes]:
    """One small real file per accepted format (and 16-bit PNG, palette GIF, CMYK JPEG)."""
    pixels = astronaut(24)
    image = Image.fromarray(pixels)
    files: dict[str, bytes] = {}
    for name, fmt, source, options in (
        ("png", "PNG", image, {}), ("jpeg", "JPEG", image, {"quality": 80}),
        ("webp", "WEBP", image, {"quality": 80}), ("gif", "GIF", image.convert("P"), {}),
        ("bmp", "BMP", image, {}), ("tiff", "TIFF", image, {"compression": "tiff_deflate"}),
        ("cmyk", "JPEG", image.convert("CMYK"), {}),
        ("png16", "PNG", Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257), {}),
    ):  # fmt: skip
        buffer = io.BytesIO()
        source.save(buffer, fmt, **options)
        files[name] = buffer.getvalue()
    return files


SEEDS = _seeds()
HUGE_SIZES = [b"\xff\xff\xff\xff", b"\x00\x00\xff\xff", b"\x7f\xff\x7f\xff", b"\x00\x00\x00\x00"]
SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00",
              b"RIFF\x00\x00\x00\x00WEBP"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with a few mutations of the kinds that break parsers."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "size", "byte"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "size" and at + 4 <= len(data):  # a header size field, made huge
            data[at : at + 4] = draw(st.sampled_from(HUGE_SIZES))
        else:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


def _within_contract(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except PixserveError as error:
        assert 400 <= error.status < 500, error
        assert " at 0x" not in error.message, error.message


@FUZZ
@given(mutated())
def test_decode_answers_pixels_or_a_named_4xx(data: bytes) -> None:
    def decode() -> None:
        image = decode_image(data, LIMITS)
        assert image.width * image.height <= LIMITS.max_pixels

    _within_contract(decode)


@FUZZ
@given(mutated(), st.sampled_from(["png", "jpeg", "webp"]), st.booleans())
def test_convert_answers_a_file_or_a_named_4xx(data: bytes, fmt: str, keep: bool) -> None:
    options = ConvertOptions(format=fmt, keep_metadata=keep)  # type: ignore[arg-type]
    _within_contract(lambda: convert_image(data, options, LIMITS))


@FUZZ
@given(st.binary(max_size=512), st.sampled_from(SIGNATURES))
def test_a_signature_followed_by_anything(tail: bytes, signature: bytes) -> None:
    _within_contract(lambda: decode_image(signature + tail, LIMITS))


def _bomb(fmt: str) -> bytes:
    """2000x2000 of one colour: small on disk, 4 megapixels decoded."""
    image = Image.new("L", (2000, 2000))
    buffer = io.BytesIO()
    options = {"TIFF": {"compression": "tiff_deflate"}, "WEBP": {"lossless": True},
               "JPEG": {"quality": 10}}.get(fmt, {})  # fmt: skip
    image.convert("P" if fmt == "GIF" else "L").save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "WEBP", "JPEG", "BMP"])
def test_a_bomb_in_any_format_is_refused_from_its_header(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = _bomb(fmt)
    limits = ImageLimits(max_bytes=8_000_000, max_pixels=250_000, max_side=4096)

    def no_pixels(*_: object) -> None:
        raise AssertionError("pixels were decoded before the size was checked")

    monkeypatch.setattr(Image.Image, "load", no_pixels)
    monkeypatch.setattr(codec.cv2, "imdecode", no_pixels)
    with pytest.raises(ImageTooLarge, match="2000x2000"):
        decode_image(bomb, limits)
    with pytest.raises(ImageTooLarge, match="2000x2000"):
        convert_image(bomb, ConvertOptions(format="png"), limits)
