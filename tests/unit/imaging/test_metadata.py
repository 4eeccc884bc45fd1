"""Metadata kept on request: written into the encoded output's container (JPEG
segments, PNG chunks, WEBP chunks) and read back by Pillow; the pixels untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from services.errors import InvalidParameter
from services.imaging.metadata import (
    EXIF_IFD,
    ORIENTATION,
    PIXEL_X,
    PIXEL_Y,
    Metadata,
    attach,
    read_metadata,
)
from tests.utils.images import astronaut

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_jpeg() -> bytes:
    """A photo as a camera writes it: turned by EXIF orientation 6, with make, EXIF
    dimensions, an ICC profile and XMP."""
    exif = Image.Exif()
    exif[ORIENTATION], exif[0x010F] = 6, "Canon"
    exif.get_ifd(EXIF_IFD).update({PIXEL_X: 48, PIXEL_Y: 32, 0x9003: "2024:05:01 10:00:00"})
    out = io.BytesIO()
    Image.fromarray(astronaut(48)[:32]).save(out, "JPEG", exif=exif.tobytes(), icc_profile=ICC,
                                             xmp=XMP)  # fmt: skip
    return out.getvalue()


def encoded(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(astronaut(max(size))[: size[1], : size[0]]).convert(mode)
    image.save(out, fmt.upper(), **({"lossless": True} if fmt == "webp" else {}))
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mode"), [("jpeg", "RGB"), ("png", "RGB"), ("png", "RGBA"),
                                           ("webp", "RGB"), ("webp", "RGBA")])  # fmt: skip
def test_exif_icc_and_xmp_reach_the_output(fmt: str, mode: str) -> None:
    metadata = read_metadata(camera_jpeg())
    assert metadata.exif is not None and metadata.icc == ICC and metadata.xmp == XMP
    plain = encoded(fmt, (128, 192), mode)
    kept = attach(plain, fmt, metadata, (128, 192))
    with Image.open(io.BytesIO(kept)) as image:
        exif = image.getexif()
        assert exif[ORIENTATION] == 1 and exif[0x010F] == "Canon"  # upright, the rest kept
        details = exif.get_ifd(EXIF_IFD)
        assert (details[PIXEL_X], details[PIXEL_Y]) == (128, 192)  # the output's size
        assert details[0x9003] == "2024:05:01 10:00:00"
        assert image.info["icc_profile"] == ICC
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
        assert XMP in (xmp.encode() if isinstance(xmp, str) else xmp)
        pixels = np.asarray(image)
    with Image.open(io.BytesIO(plain)) as image:
        assert np.array_equal(pixels, np.asarray(image))  # no pixel was encoded again
    assert read_metadata(camera_jpeg()).exif[ORIENTATION] == 6  # type: ignore[index]


def test_nothing_to_keep_leaves_the_bytes_alone() -> None:
    plain = encoded("png", (16, 16))
    assert attach(plain, "png", read_metadata(plain), (16, 16)) == plain
    assert not Metadata()


def test_avif_is_refused_by_name() -> None:
    with pytest.raises(InvalidParameter, match="keep_metadata: avif"):
        attach(b"", "avif", read_metadata(camera_jpeg()), (8, 8))
