"""Format conversion: formats, resize modes, EXIF orientation applied then stripped,
the ICC profile kept, the byte budget, and bad options named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from services.errors import InvalidImage, InvalidParameter
from services.imaging.codec import ImageLimits
from services.imaging.convert import ConvertOptions, convert_image
from tests.utils.images import astronaut, encode

LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=4096 * 4096, max_side=4096)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_each_format_encodes_what_it_says(fmt: str) -> None:
    result = convert_image(encode(astronaut(64)), ConvertOptions(format=fmt), LIMITS)  # type: ignore[arg-type]
    image = opened(result.data)
    assert image.format == fmt.upper() and image.size == (64, 64)
    assert result.content_type == f"image/{fmt}" and (result.width, result.height) == (64, 64)
    # a lossy round trip stays close to the source
    error = np.abs(np.asarray(image.convert("RGB"), float) - astronaut(64)).mean()
    assert error < 12


@pytest.mark.parametrize(
    ("options", "size"),
    [
        (ConvertOptions(resize="fit", width=50), (50, 25)),
        (ConvertOptions(resize="fit", width=50, height=10), (20, 10)),
        (ConvertOptions(resize="fill", width=30, height=30), (30, 30)),
        (ConvertOptions(resize="scale", scale=0.25), (25, 12)),
        (ConvertOptions(resize="scale", scale=2), (200, 100)),
    ],
)
def test_resize_modes(options: ConvertOptions, size: tuple[int, int]) -> None:
    wide = np.asarray(Image.fromarray(astronaut(100)).resize((100, 50)))
    result = convert_image(encode(wide), options, LIMITS)
    assert opened(result.data).size == size == (result.width, result.height)


def test_exif_orientation_is_applied_then_metadata_stripped() -> None:
    wide = np.asarray(Image.fromarray(astronaut(64)).resize((60, 30)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "ACME camera"
    data = encode(wide, "JPEG", exif=exif.tobytes())
    stripped = opened(convert_image(data, ConvertOptions(format="jpeg"), LIMITS).data)
    assert stripped.size == (30, 60) and not stripped.getexif()
    kept = opened(convert_image(data, ConvertOptions(format="jpeg", keep_metadata=True),
                                LIMITS).data)  # fmt: skip
    assert kept.size == (30, 60)
    assert kept.getexif().get(0x010F) == "ACME camera" and 0x0112 not in kept.getexif()


def test_the_icc_profile_is_kept() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(astronaut(32), "PNG", icc_profile=profile)
    for fmt in ("jpeg", "webp", "png"):
        result = convert_image(data, ConvertOptions(format=fmt), LIMITS)  # type: ignore[arg-type]
        assert opened(result.data).info.get("icc_profile") == profile, fmt


def test_alpha_becomes_white_in_jpeg_and_stays_in_webp() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black
    jpeg = opened(convert_image(encode(rgba), ConvertOptions(format="jpeg"), LIMITS).data)
    assert np.asarray(jpeg).min() > 240
    webp = opened(convert_image(encode(rgba), ConvertOptions(format="webp"), LIMITS).data)
    assert webp.mode == "RGBA"


def test_a_byte_budget_picks_the_highest_quality_that_fits() -> None:
    data = encode(astronaut(256))
    full = convert_image(data, ConvertOptions(format="webp", quality=90), LIMITS)
    budget = len(full.data) // 3
    fitted = convert_image(data, ConvertOptions(format="webp", quality=90, max_bytes=budget),
                           LIMITS)  # fmt: skip
    assert len(fitted.data) <= budget and fitted.quality is not None and fitted.quality < 90
    one_better = convert_image(data, ConvertOptions(format="webp", quality=fitted.quality + 1),
                               LIMITS)  # fmt: skip
    assert len(one_better.data) > budget  # the search found the best fitting quality
    with pytest.raises(InvalidParameter, match="cannot fit 100 bytes"):
        convert_image(data, ConvertOptions(format="jpeg", max_bytes=100), LIMITS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ConvertOptions(resize="fill", width=10), "needs both width and height"),
        (ConvertOptions(resize="fit"), "needs width, height or both"),
        (ConvertOptions(resize="scale"), "needs scale"),
        (ConvertOptions(resize="scale", scale=9), "scale must be"),
        (ConvertOptions(format="png", max_bytes=1000), "needs a lossy format"),
        (ConvertOptions(quality=0), "quality must be 1-100"),
        (ConvertOptions(resize="fit", width=10**6), "width must be"),
    ],
)
def test_bad_options_are_named(options: ConvertOptions, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        convert_image(encode(astronaut(16)), options, LIMITS)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidImage):
        convert_image(b"not an image", ConvertOptions(), LIMITS)


@pytest.mark.parametrize(("mode", "expected"), [("fit", (64, 48)), ("fill", (48, 48))])
def test_enlarge_false_never_grows_an_image(mode: str, expected: tuple[int, int]) -> None:
    data = encode(astronaut(64)[:48])
    grown = convert_image(data, ConvertOptions("png", resize=mode, width=256, height=256),
                          LIMITS)  # fmt: skip
    kept = convert_image(data, ConvertOptions("png", resize=mode, width=256, height=256,
                                              enlarge=False), LIMITS)  # fmt: skip
    assert (grown.width, grown.height) != expected
    assert (kept.width, kept.height) == expected
