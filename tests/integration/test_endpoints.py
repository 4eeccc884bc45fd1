"""Every endpoint over HTTP against the real Serve application, and every bad input."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import REAL_UPSCALER
from tests.utils.images import astronaut, encode, png16, png_header_only
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def post(
    client: httpx.Client, data: bytes, path: str = "/v1/upscale", **form: object
) -> httpx.Response:
    files = {"image": ("upload", data, "application/octet-stream")}
    return client.post(path, files=files, data={k: str(v) for k, v in form.items()})


def opened(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    upscaler = ready.json()["deployments"]["Upscaler"]
    # at least the configured ones (test_add_model.py adds one at run time)
    assert upscaler["ready"] and {TINY_RRDB, TINY_COMPACT, REAL_UPSCALER} <= set(upscaler["loaded"])


def test_openapi_and_docs(client: httpx.Client) -> None:
    assert "/v1/upscale" in client.get("/openapi.json").json()["paths"]
    assert "swagger" in client.get("/docs").text.lower()


def test_models_listing(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    states = {model["name"]: model["state"] for model in body["models"]}
    assert body["default_model"] == TINY_RRDB
    assert states[TINY_RRDB] == "loaded" and states[REAL_UPSCALER] == "loaded"
    assert states["x4plus-anime"] == "not_configured"


def test_upscale_default_png(client: httpx.Client) -> None:
    response = post(client, encode(astronaut(48)))
    assert opened(response).size == (192, 192)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-pixserve-model"] == TINY_RRDB
    assert response.headers["x-pixserve-output-size"] == "192x192"
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("form", "size", "content_type"),
    [
        ({"scale": 2.5}, (100, 100), "image/png"),
        ({"width": 150}, (150, 150), "image/png"),
        ({"width": 90, "height": 30, "format": "jpeg", "quality": 70}, (90, 30), "image/jpeg"),
        ({"model": TINY_COMPACT, "format": "webp"}, (80, 80), "image/webp"),
    ],
)
def test_upscale_parameters(
    client: httpx.Client, form: dict[str, object], size: tuple[int, int], content_type: str
) -> None:
    response = post(client, encode(astronaut(40)), **form)
    assert opened(response).size == size and response.headers["content-type"] == content_type


def test_gray_rgba_and_sixteen_bit(client: httpx.Client) -> None:
    assert opened(post(client, encode(astronaut(20)[:, :, 0]))).mode == "L"
    rgba = np.dstack([astronaut(20), np.full((20, 20), 77, np.uint8)])
    result = opened(post(client, encode(rgba)))
    assert result.mode == "RGBA" and result.size == (80, 80)
    sixteen = post(client, png16(astronaut(20).astype(np.uint16) * 257), model=TINY_COMPACT)
    assert sixteen.status_code == 200 and sixteen.content[24] == 16  # PNG IHDR bit depth


BAD_INPUTS = [
    ("not an image", b"just some text", {}, 400, "invalid_image"),
    ("truncated", encode(astronaut(64), "JPEG")[:500], {}, 400, "invalid_image"),
    ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", {}, 415, "unsupported_format"),
    ("pdf", b"%PDF-1.4 fake", {}, 415, "unsupported_format"),
    ("over size limit", b"\x89PNG\r\n\x1a\n" + b"0" * 2_100_000, {}, 413, "payload_too_large"),
    ("pixel bomb", encode(np.zeros((1500, 1500), np.uint8)), {}, 413, "image_too_large"),
    ("zero size", png_header_only(0, 0), {}, 400, "invalid_image"),
    ("absurd dimensions", png_header_only(10**6, 1), {}, 413, "image_too_large"),
    ("unknown model", encode(astronaut(8)), {"model": "x9000"}, 422, "unknown_model"),
    ("scale too small", encode(astronaut(8)), {"scale": 0.5}, 422, "invalid_parameter"),
    ("scale too large", encode(astronaut(8)), {"scale": 100}, 422, "invalid_parameter"),
    ("scale not a number", encode(astronaut(8)), {"scale": "big"}, 422, "invalid_parameter"),
    ("scale and width", encode(astronaut(8)), {"scale": 2, "width": 9}, 422, "invalid_parameter"),
    ("bad format", encode(astronaut(8)), {"format": "gif"}, 422, "invalid_parameter"),
    ("bad quality", encode(astronaut(8)), {"quality": 0}, 422, "invalid_parameter"),
]


@pytest.mark.parametrize(
    ("data", "form", "status", "code"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_a_named_4xx(
    client: httpx.Client, data: bytes, form: dict[str, object], status: int, code: str
) -> None:
    response = post(client, data, **form)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    assert post(client, encode(astronaut(8))).status_code == 200  # still serving


def test_missing_image_field(client: httpx.Client) -> None:
    response = client.post("/v1/upscale", data={"scale": "2"})
    assert response.status_code == 422
    assert "image" in response.json()["error"]["message"]


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_missing_weights_make_readyz_503_and_name_the_command(client: httpx.Client) -> None:
    ready = client.get("/missing/readyz")
    assert ready.status_code == 503
    missing = ready.json()["deployments"]["Upscaler"]["missing"]
    assert "pixserve models pull x2plus" in missing["x2plus"]
    response = post(client, encode(astronaut(8)), path="/missing/v1/upscale", model="x2plus")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"
    assert "pixserve models pull x2plus" in response.json()["error"]["message"]
    states = {m["name"]: m["state"] for m in client.get("/missing/v1/models").json()["models"]}
    assert states["x2plus"] == "missing" and states[TINY_RRDB] == "loaded"
