"""``POST /v1/convert`` through the real Serve app's Codec deployment: formats, resize,
orientation and metadata, the byte budget, and bad input named with a 4xx while the
service keeps serving."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def convert(client: httpx.Client, data: bytes, **form: object) -> httpx.Response:
    files = {"image": ("in.png", data, "image/png")}
    return client.post("/v1/convert", files=files, data={k: str(v) for k, v in form.items()})


def test_convert_formats_and_resize(client: httpx.Client) -> None:
    source = encode(astronaut(120))
    for fmt in ("jpeg", "png", "webp", "avif"):
        response = convert(client, source, format=fmt, resize="fit", width=60)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"image/{fmt}"
        assert response.headers["X-Pixserve-Output-Size"] == "60x60"
        assert Image.open(io.BytesIO(response.content)).size == (60, 60)
    fill = convert(client, source, resize="fill", width=80, height=20)
    assert Image.open(io.BytesIO(fill.content)).size == (80, 20)


def test_orientation_applied_metadata_stripped(client: httpx.Client) -> None:
    wide = np.asarray(Image.fromarray(astronaut(64)).resize((60, 30)))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "ACME camera"
    response = convert(client, encode(wide, "JPEG", exif=exif.tobytes()), format="jpeg")
    result = Image.open(io.BytesIO(response.content))
    assert result.size == (30, 60) and not result.getexif()


def test_byte_budget(client: httpx.Client) -> None:
    source = encode(astronaut(256))
    response = convert(client, source, format="webp", quality=90, max_bytes=6000)
    assert response.status_code == 200 and len(response.content) <= 6000
    assert int(response.headers["X-Pixserve-Quality"]) < 90
    too_small = convert(client, source, format="jpeg", max_bytes=50)
    assert too_small.status_code == 422
    assert "cannot fit 50 bytes" in too_small.json()["error"]["message"]


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"resize": "fill", "width": 10}, 422, "invalid_parameter"),
        ({"format": "gif"}, 422, "invalid_parameter"),
        ({"format": "png", "max_bytes": 1000}, 422, "invalid_parameter"),
        ({"resize": "scale", "scale": 100}, 422, "invalid_parameter"),
    ],
)
def test_bad_options_get_a_named_4xx(
    client: httpx.Client, form: dict[str, object], status: int, code: str
) -> None:
    response = convert(client, encode(astronaut(16)), **form)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_bad_input_then_still_serving(client: httpx.Client) -> None:
    bad = convert(client, b"%PDF-1.4 not an image")
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_format"
    assert convert(client, encode(astronaut(16))).status_code == 200
