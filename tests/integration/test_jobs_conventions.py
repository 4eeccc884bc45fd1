"""Jobs as clients of hosted APIs use them, through the real Serve app: JSON
submissions (base64 images, data: URLs, URLs), ``Prefer: wait`` answering the finished
job, ISO 8601 times beside the numbers, and JSON refusals naming the field."""

from __future__ import annotations

import base64
import io
import json
import re

import httpx
import pytest
from PIL import Image

from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def b64(size: int) -> str:
    return base64.b64encode(encode(astronaut(size))).decode()


def test_a_json_job_with_prefer_wait_answers_the_finished_job(client: httpx.Client) -> None:
    body = {"task": "upscale", "model": TINY_COMPACT, "scale": 2, "format": "png",
            "images": [b64(16), "data:image/png;base64," + b64(20)]}  # fmt: skip
    response = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
    assert response.status_code == 200, response.text  # ended within the wait
    assert response.headers["Preference-Applied"] == "wait=60"
    job = response.json()
    assert job["status"] == "succeeded" and job["task"]["scale"] == 2
    assert [item["name"] for item in job["items"]] == ["image-0", "image-1"]
    assert ISO.fullmatch(job["created_at_iso"]) and ISO.fullmatch(job["finished_at_iso"])
    assert all(ISO.fullmatch(item["finished_at_iso"]) for item in job["items"])
    sizes = [Image.open(io.BytesIO(client.get(item["output_url"]).content)).size
             for item in job["items"]]  # fmt: skip
    assert sizes == [(32, 32), (40, 40)]


def test_without_prefer_a_job_answers_at_once(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"model": TINY_COMPACT, "images": [b64(16)]})
    assert response.status_code == 202 and "Preference-Applied" not in response.headers
    assert response.json()["status"] in ("queued", "running", "succeeded")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"images": [b64(16)], "scal": 2}, 422, "scal"),
        ({"images": ["@@@"]}, 422, "images[0]: not valid base64"),
        ({"images": "abc"}, 422, "images: a list of strings"),
        ({"images": [b64(16)], "webhook_url": 5}, 422, "webhook_url"),
        ({"images": [b64(16)], "scale": float("nan")}, 422, "not a number JSON allows"),
        ([1, 2], 422, "must be a JSON object"),
        ({"urls": []}, 422, "a job takes 1 to"),
    ],
)
def test_json_refusals_name_the_field(
    client: httpx.Client, body: object, status: int, words: str
) -> None:
    response = client.post("/v1/jobs", content=_json(body),
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_a_wrong_content_type_names_both_kinds(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    message = response.json()["error"]["message"]
    assert "multipart/form-data" in message and "application/json" in message


def _json(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def test_metadata_is_kept_on_request_through_a_job(client: httpx.Client) -> None:
    from tests.unit.imaging.test_metadata import ICC, camera_jpeg

    body = {"model": TINY_COMPACT, "keep_metadata": True, "format": "jpeg",
            "images": [base64.b64encode(camera_jpeg()).decode()]}  # fmt: skip
    job = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"}).json()
    assert job["status"] == "succeeded", job
    output = client.get(job["items"][0]["output_url"]).content
    with Image.open(io.BytesIO(output)) as image:
        exif = image.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "Canon" and image.info["icc_profile"] == ICC
        assert image.size == (64, 96)  # 48x32 turned upright by its EXIF, then x2
        assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == (64, 96)


def test_progress_inside_an_item_reaches_the_event_stream(client: httpx.Client) -> None:
    """One image of many tiles: the Upscaler replica reports its tiles as it goes."""
    job = client.post("/v1/jobs", json={"model": TINY_COMPACT, "images": [b64(320)]}).json()
    progress = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(": ")[2]
            elif line.startswith("data:") and kind == "progress":
                progress.append(json.loads(line.partition(": ")[2]))
    assert progress, "no progress event"
    assert all(p["unit"] == "tiles" and p["index"] == 0 for p in progress)
    assert progress[-1]["step"] == progress[-1]["steps"] > 1  # the last tile always
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
