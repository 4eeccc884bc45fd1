"""``POST /v1/admin/eval`` over the fake backend (nearest-neighbour tile models): the
report, its plot, uploaded references, and named 4xx errors before any image runs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.api.app import create_api
from services.config import Settings
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode

pytestmark = pytest.mark.timeout(120)
SETTINGS = Settings(models=["x4plus", "animevideov3"], denoise_models=["scunet-color"],
                    default_denoise_model="scunet-color")  # fmt: skip


@pytest.fixture
def client() -> Iterator[TestClient]:
    backend = FakeBackend(loaded=["x4plus", "animevideov3", "scunet-color"])
    with TestClient(create_api(SETTINGS, backend)) as test_client:
        yield test_client


def test_a_report_on_the_bundled_images(client: TestClient) -> None:
    form = {"models": ["x4plus", "scunet-color"], "max_side": "48", "noise_sigma": "5"}
    response = client.post("/v1/admin/eval", data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    rows = {row["model"]: row for row in body["report"]["models"]}
    assert set(rows) == {"x4plus", "scunet-color", "bicubic"}
    assert rows["x4plus"]["scale"] == 4 and rows["scunet-color"]["scale"] == 1
    first = rows["x4plus"]["images"][0]
    assert len(rows["x4plus"]["images"]) == 10 and first["input_size"] == [12, 12]
    assert body["report"]["degradation"]["noise_sigma"] == 5
    assert "Gaussian noise of sigma 5" in body["markdown"]
    assert Image.open(io.BytesIO(base64.b64decode(body["plot_png"]))).format == "PNG"


def test_uploaded_references(client: TestClient) -> None:
    files = [("images", ("a.png", encode(astronaut(40)), "image/png")),
             ("images", ("b.jpg", encode(astronaut(36), "JPEG"), "image/jpeg"))]  # fmt: skip
    response = client.post("/v1/admin/eval", files=files,
                           data={"models": "animevideov3", "jpeg_quality": "50"})  # fmt: skip
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["references"] == ["a.png", "b.jpg"] and report["source"] == "uploaded"


@pytest.mark.parametrize(
    ("form", "files", "param"),
    [
        ({"models": "nope"}, None, "models"),
        ({"models": "x2plus"}, None, "models"),  # declared, not served here
        ({"models": "blip-caption"}, None, "models"),  # not an image-to-image model
        ({"models": "x4plus", "max_side": "8"}, None, "max_side"),
        ({"models": "x4plus", "jpeg_quality": "0"}, None, "jpeg_quality"),
        ({"models": "x4plus"}, [("images", ("bad.png", b"not an image", "image/png"))], "images"),
        ({}, None, "models"),
    ],
)
def test_bad_requests_name_their_field(
    client: TestClient, form: dict[str, str], files: object, param: str
) -> None:
    response = client.post("/v1/admin/eval", data=form, files=files)  # type: ignore[arg-type]
    assert response.status_code in (400, 404, 415, 422), response.text
    error = response.json()["error"]
    assert error["param"] == param, error
