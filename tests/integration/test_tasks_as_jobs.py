"""Every task as a job through the real Serve app (tiny models): the same spec as the
sync route, checked at submission (422 naming the field, never a 202 whose items all
fail), run by the Dispatcher through the same use case, and an envelope without
internals."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.test_jobs_api import wait
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT, TINY_DNCNN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def submit(
    client: httpx.Client, count: int, headers: dict[str, str] | None = None, **form: Any
) -> httpx.Response:
    files = [("images", (f"{i}.png", encode(astronaut(32 + 8 * i)), "image/png"))
             for i in range(count)]  # fmt: skip
    return client.post("/v1/jobs", files=files or None, data=form, headers=headers or {})


def finished(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    done = wait(client, response.json()["id"])
    assert done["status"] == "succeeded", [item["error"] for item in done["items"]]
    return done


def outputs(client: httpx.Client, done: dict[str, Any]) -> list[httpx.Response]:
    fetched = [client.get(item["output_url"]) for item in done["items"]]
    assert all(response.status_code == 200 for response in fetched)
    return fetched


def test_a_denoise_job(client: httpx.Client) -> None:
    done = finished(client, submit(client, 2, task="denoise", model=TINY_DNCNN, format="webp"))
    for response, side in zip(outputs(client, done), (32, 40), strict=True):
        assert response.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(response.content)).size == (side, side)
    assert done["task"]["task"] == "denoise" and done["task"]["model"] == TINY_DNCNN


def test_a_convert_job_writes_avif(client: httpx.Client) -> None:
    form = {"task": "convert", "format": "avif", "resize": "fit", "width": "16"}
    done = finished(client, submit(client, 2, **form))
    for response in outputs(client, done):
        assert response.headers["content-type"] == "image/avif"
        assert Image.open(io.BytesIO(response.content)).size == (16, 16)


def test_a_caption_job_stores_json_per_item(client: httpx.Client) -> None:
    done = finished(client, submit(client, 2, task="caption", outputs=["caption", "nsfw"]))
    for item, response in zip(done["items"], outputs(client, done), strict=True):
        assert response.headers["content-type"] == "application/json"
        described = response.json()
        assert described["caption"] and 0 <= described["nsfw"] <= 1 and described["tags"] is None
        assert item["texts"] == described


def test_a_face_restoration_job(client: httpx.Client) -> None:
    done = finished(client, submit(client, 1, task="restore_face", max_faces="1", format="jpeg"))
    (response,) = outputs(client, done)
    assert response.headers["content-type"] == "image/jpeg"
    assert done["items"][0]["texts"]["faces"]["restored"] <= 1


def test_a_generate_job_records_each_items_seed(client: httpx.Client) -> None:
    form = {"task": "generate", "prompt": "a lighthouse", "count": "2", "seed": "41",
            "width": "256", "height": "256", "steps": "2", "format": "png"}  # fmt: skip
    done = finished(client, client.post("/v1/jobs", data=form))
    assert done["task"]["seeds"] == [41, 42]
    assert [item["name"] for item in done["items"]] == ["a lighthouse"] * 2
    assert [item["texts"]["generate"]["seed"] for item in done["items"]] == [41, 42]
    first, second = outputs(client, done)
    assert Image.open(io.BytesIO(first.content)).size == (256, 256)
    assert first.content != second.content  # other seeds, other images
    again = client.post(
        "/v1/generate",
        data={
            "prompt": "a lighthouse",
            "seed": "42",
            "width": "256",
            "height": "256",
            "steps": "2",
        },
    )
    assert again.status_code == 200 and again.content == second.content  # fmt: skip


def test_a_prompt_list_generate_job(client: httpx.Client) -> None:
    form = {"task": "generate", "prompts": ["a cat", "a dog"], "width": "256",
            "height": "256", "steps": "1"}  # fmt: skip
    done = finished(client, client.post("/v1/jobs", data=form))
    assert [item["name"] for item in done["items"]] == ["a cat", "a dog"]
    assert len(set(done["task"]["seeds"])) == 2


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"scale": "100"}, "scale: 100 is out of range"),
        ({"scale": "0.1"}, "scale: 0.1 is out of range"),
        ({"scale": "nan"}, "scale: Input should be a finite number"),
        ({"scale": "1e308"}, "is out of range"),
        ({"scale": "2", "width": "64"}, "either scale or width/height"),
        ({"model": "x4plus-anime"}, "'x4plus-anime' is not served here"),
        ({"width": "16384", "height": "1", "format": "webp"}, "over WEBP's limit"),
        ({"scal": "2"}, "scal: Extra inputs are not permitted"),
        ({"task": "denoise", "model": TINY_COMPACT}, "is a upscale model, not a denoise model"),
        ({"task": "caption", "outputs": "poem"}, "outputs.0"),
        ({"task": "generate", "prompt": "a cat"}, "a generate job takes prompts, not images"),
        ({"task": "sharpen"}, "task: Input tag 'sharpen' found"),
    ],
)
def test_a_job_that_cannot_run_is_refused_at_submission(
    client: httpx.Client, form: dict[str, str], words: str
) -> None:
    response = submit(client, 1, **form)
    assert response.status_code == 422, response.text
    assert words in response.json()["error"]["message"]


def test_the_envelope_has_no_internals_and_absolute_urls(client: httpx.Client) -> None:
    response = submit(client, 1, model=TINY_COMPACT)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location.startswith("http") and location.endswith(f"/v1/jobs/{response.json()['id']}")
    done = wait(client, response.json()["id"])
    assert client.get(location).json()["id"] == done["id"]
    (item,) = done["items"]
    assert not {"input", "output_key", "traceparent"} & set(item)
    assert item["output_url"].startswith("http") and "upload:" not in json.dumps(done)


def test_the_idempotency_key_covers_the_webhook_events(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"events-{id(client)}"}
    first = submit(client, 1, key, model=TINY_COMPACT, webhook_events=["completed"])
    assert first.status_code == 202, first.text
    other = submit(client, 1, key, model=TINY_COMPACT, webhook_events=["item", "completed"])
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


def test_a_job_for_a_model_whose_weights_are_missing_is_a_503_at_submission(
    client: httpx.Client,
) -> None:
    """The missing app serves x2plus without its weights: the job is refused at once (a
    retry after `pixserve models pull` works), not accepted to fail every item."""
    files = [("images", ("a.png", encode(astronaut(16)), "image/png"))]
    response = client.post("/missing/v1/jobs", files=files, data={"model": "x2plus"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_ready" and "x2plus is not loaded" in error["message"]
