"""``POST /v1/restore/face`` on the FaceRestorer deployment (full-size random-weight
GFPGAN and CodeFormer, hand-set tiny RetinaFace detectors): restoration onto a
background upscaled by the Upscaler, faces of concurrent requests in one forward pass,
faceless images, bad input named, and readiness and the model listing."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import REAL_DETECTOR
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import (
    TINY_BLIND_DETECTOR,
    TINY_CODEFORMER,
    TINY_DETECTOR,
    TINY_GFPGAN,
    TINY_RRDB,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def restore(client: httpx.Client, data: bytes, prefix: str = "", **form: Any) -> httpx.Response:
    return client.post(f"{prefix}/v1/restore/face", files={"image": ("a.png", data, "image/png")},
                       data=form)  # fmt: skip


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_central_face_onto_an_upscaled_background(client: httpx.Client) -> None:
    response = restore(client, encode(astronaut(96)), only_center_face="true", upscale="2",
                       background_model=TINY_RRDB, format="webp", quality="95")  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["X-Pixserve-Model"] == TINY_GFPGAN
    assert response.headers["X-Pixserve-Faces"] == "1"
    assert int(response.headers["X-Pixserve-Faces-Detected"]) > 1
    assert response.headers["X-Pixserve-Output-Size"] == "192x192"
    ((x0, y0, x1, y1, score),) = json.loads(response.headers["X-Pixserve-Face-Boxes"])
    assert (x1 - x0, y1 - y0) == (64, 64) and 0.8 < score <= 1
    assert decoded(response.content).shape == (192, 192, 3)


def test_faces_of_concurrent_requests_share_a_forward_pass(client: httpx.Client) -> None:
    from ray import serve

    images = [encode(astronaut(80 + 8 * i)) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda d: restore(client, d, max_faces="1"), images))
    assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
    assert all(a.headers["X-Pixserve-Faces"] == "1" for a in answers)
    handle = serve.get_deployment_handle("FaceRestorer", app_name="pixserve")
    passes = handle.face_passes.remote().result(timeout_s=30)
    assert max(len(p.request_ids) for p in passes) >= 2, passes


def test_codeformer_with_a_fidelity_weight(client: httpx.Client) -> None:
    response = restore(client, encode(astronaut(64)), model=TINY_CODEFORMER, fidelity="0.7",
                       weight="0.8", only_center_face="true")  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Model"] == TINY_CODEFORMER
    assert response.headers["X-Pixserve-Faces"] == "1"


def test_an_image_without_a_face_comes_back_unchanged(client: httpx.Client) -> None:
    data = encode(astronaut(72))
    response = restore(client, data, detector=TINY_BLIND_DETECTOR)
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Faces"] == "0"
    assert json.loads(response.headers["X-Pixserve-Face-Boxes"]) == []
    assert np.array_equal(decoded(response.content), astronaut(72))


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"weight": "1.5"}, 422, "weight: Input should be less than or equal to 1"),
        ({"upscale": "8"}, 422, "upscale: Input should be less than or equal to 4"),
        ({"max_faces": "0"}, 422, "max_faces"),
        ({"model": TINY_RRDB}, 422, "is a upscale model, not a face model"),
        ({"detector": TINY_GFPGAN}, 422, "not a detect model"),
        ({"model": "gfpgan-v9"}, 422, "unknown model 'gfpgan-v9'"),
        ({"background_model": TINY_GFPGAN, "upscale": "2"}, 422, "not a upscale model"),
    ],
)
def test_bad_options_are_named(
    client: httpx.Client, form: dict[str, str], status: int, words: str
) -> None:
    response = restore(client, encode(astronaut(32)), **form)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_not_an_image_is_refused(client: httpx.Client) -> None:
    response = restore(client, b"not an image at all")
    assert response.status_code in (400, 415) and "error" in response.json()


def test_readiness_and_listing(client: httpx.Client) -> None:
    faces = client.get("/readyz").json()["deployments"]["FaceRestorer"]
    assert faces["ready"] and faces["missing"] == {}
    assert set(faces["loaded"]) == {TINY_GFPGAN, TINY_CODEFORMER, TINY_DETECTOR,
                                    TINY_BLIND_DETECTOR, REAL_DETECTOR}  # fmt: skip
    listing = client.get("/v1/models").json()
    assert listing["default_face_model"] == TINY_GFPGAN
    states = {m["name"]: (m["task"], m["state"]) for m in listing["models"]}
    assert states[TINY_GFPGAN] == ("face", "loaded")
    assert states[TINY_DETECTOR] == ("detect", "loaded")
    assert states["codeformer"] == ("face", "not_configured")


def test_an_app_without_face_models_answers_501_naming_the_setting(client: httpx.Client) -> None:
    """Not configured is not something a retry fixes: 501, and x-should-retry false."""
    response = restore(client, encode(astronaut(32)), "/missing")
    assert response.status_code == 501, response.text
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "not_configured"
    message = response.json()["error"]["message"]
    assert "face_detectors" in message and TINY_DETECTOR in message
