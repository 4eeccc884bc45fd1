"""Async jobs through the real Serve app (Ingress + Dispatcher + Upscaler), Redis and a
file:// store: batches complete, SSE shows monotonic progress and resumes, idempotency,
poison items, SSRF-refused URLs, cancel, tenants, a Redis restart mid-batch, expiry."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image
from redis import Redis

from tests.integration.test_api_keys import create_key
from tests.integration.test_error_contract import check_contract
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import RedisServer
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def submit(
    client: httpx.Client,
    images: list[bytes],
    prefix: str = "",
    headers: dict[str, str] | None = None,
    **form: Any,
) -> httpx.Response:
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    data = {"model": TINY_COMPACT, **{k: v for k, v in form.items() if k != "urls"}}
    if "urls" in form:
        data["urls"] = form["urls"]
    return client.post(f"{prefix}/v1/jobs", files=files or None, data=data, headers=headers or {})


def wait(client: httpx.Client, job_id: str, prefix: str = "", headers: dict[str, str] | None = None,
         timeout_s: float = 120) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"{prefix}/v1/jobs/{job_id}", headers=headers or {}).json()
        if job["status"] in ("succeeded", "failed", "partial", "canceled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_batch_completes_with_every_output(client: httpx.Client) -> None:
    response = submit(client, [encode(astronaut(16 + i % 5)) for i in range(20)])
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["progress"]["total"] == 20
    done = wait(client, job["id"])
    errors = {item["error"] for item in done["items"]}
    assert done["status"] == "succeeded" and done["progress"]["done"] == 20, errors
    for item in done["items"]:
        output = client.get(item["output_url"])
        assert output.status_code == 200
        assert Image.open(io.BytesIO(output.content)).width == 2 * (16 + item["index"] % 5)
    assert done["metrics"]["queue_wait_s"] >= 0 and done["metrics"]["run_s"] > 0


def read_events(response: httpx.Response) -> list[dict[str, str]]:
    """The stream's events as {id, event, data} (comment pings skipped)."""
    events, event = [], {}
    for line in response.iter_lines():
        if line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(": ")
            event[key] = value
        elif not line and event:
            events.append(event)
            event = {}
    return events


def test_events_are_typed_monotonic_end_with_the_envelope_and_resume(
    client: httpx.Client,
) -> None:
    job = submit(client, [encode(astronaut(16)) for _ in range(6)]).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        events = read_events(stream)
    data = [json.loads(e["data"]) for e in events]
    ended = [d for e, d in zip(events, data, strict=True) if e["event"] == "item"
             and d["status"] != "running"]  # fmt: skip
    done = [d["progress"]["done"] for d in ended]
    assert done == sorted(done) and done[-1] == 6 and isinstance(ended[0]["index"], int)
    started = [d["index"] for e, d in zip(events, data, strict=True)
               if e["event"] == "item" and d["status"] == "running"]  # fmt: skip
    assert sorted(set(started)) == list(range(6))  # each item's start is an event too
    assert all(d["timestamp"].endswith("Z") and d["job_id"] == job["id"] for d in data[:-1])
    assert events[-1]["event"] == "completed"  # the stream's own end, with the envelope
    assert data[-1]["status"] == "succeeded" and len(data[-1]["items"]) == 6
    middle = events[len(events) // 2]["id"]
    with client.stream(
        "GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": middle}
    ) as s:
        resumed = read_events(s)
    assert resumed[0]["id"] > middle and len(resumed) == len(events) - len(events) // 2 - 1
    assert resumed[-1]["event"] == "completed"
    with client.stream(  # resumed after the end: only the envelope again
        "GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": events[-1]["id"]}
    ) as s:
        assert [e["event"] for e in read_events(s)] == ["completed"]


def test_idempotency_key(client: httpx.Client) -> None:
    images = [encode(astronaut(16))]
    first = submit(client, images, headers={"Idempotency-Key": "abc-1"}).json()
    again = submit(client, images, headers={"Idempotency-Key": "abc-1"}).json()
    assert again["id"] == first["id"]
    changed = submit(client, [encode(astronaut(17))], headers={"Idempotency-Key": "abc-1"})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"
    batch = [encode(astronaut(16 + i)) for i in range(20)]  # the first takes a while to store
    with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent duplicates: one job
        racing = list(pool.map(
            lambda _: submit(client, batch, headers={"Idempotency-Key": "abc-2"}), range(6)
        ))  # fmt: skip
    assert {r.status_code for r in racing} == {202}
    assert len({r.json()["id"] for r in racing}) == 1


def test_poison_and_ssrf_items_fail_alone(client: httpx.Client) -> None:
    job = submit(client, [encode(astronaut(16)), b"garbage"],
                 urls=["https://127.0.0.1/x.png"]).json()  # fmt: skip
    done = wait(client, job["id"])
    assert done["status"] == "partial" and done["progress"]["done"] == 1
    errors = [item["error"] for item in done["items"]]
    assert errors[0] is None and errors[1].startswith("invalid_image")
    assert errors[2].startswith("url_refused") and "non-public address" in errors[2]


def test_cancel_list_and_bad_submissions(client: httpx.Client) -> None:
    job = submit(client, [encode(astronaut(16)) for _ in range(30)]).json()
    canceled = client.delete(f"/v1/jobs/{job['id']}").json()
    assert canceled["status"] == "canceled"
    listed = client.get("/v1/jobs", params={"status": "canceled"}).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    empty = client.post("/v1/jobs", data={"model": TINY_COMPACT})
    assert empty.status_code == 422 and "1 to" in empty.json()["error"]["message"]
    unknown = submit(client, [encode(astronaut(8))], model="nope")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_model"
    assert client.get(f"/v1/jobs/{'0' * 32}").status_code == 404
    malformed = client.get("/v1/jobs/doesnotexist")
    assert malformed.status_code == 422 and "job_id" in malformed.json()["error"]["message"]
    many = submit(client, [encode(astronaut(8)) + b"\0" * 1_500_000] * 6)  # 9 MB > 8 MB
    assert many.status_code == 413 and "limit 8000000" in many.json()["error"]["message"]
    hooked = submit(client, [encode(astronaut(8))], webhook_url="https://example.com/hook")
    assert hooked.status_code == 422 and "webhook_secret" in hooked.json()["error"]["message"]


def test_jobs_are_private_to_their_key(client: httpx.Client, redis_url: str) -> None:
    mine = {"Authorization": f"Bearer {create_key(redis_url, 'tenant-a', 600)}"}
    theirs = {"Authorization": f"Bearer {create_key(redis_url, 'tenant-b', 600)}"}
    job = submit(client, [encode(astronaut(16))], prefix="/keyed", headers=mine).json()
    assert client.get(f"/keyed/v1/jobs/{job['id']}", headers=mine).status_code == 200
    other = client.get(f"/keyed/v1/jobs/{job['id']}", headers=theirs)
    assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
    assert client.get("/keyed/v1/jobs", headers=theirs).json()["jobs"] == []


def test_restarting_redis_mid_batch_loses_nothing(
    client: httpx.Client, redis_process: RedisServer
) -> None:
    """SIGKILL redis-server while a job runs, start it again on its append-only file:
    reads and submissions answer a retryable 503 meanwhile and /readyz says why; then
    the job completes with every item once and a new submission is accepted."""
    job = submit(client, [encode(astronaut(16 + i % 5)) for i in range(60)]).json()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"] < 10:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    time.sleep(1.5)  # the job record is more than one fsync (1 s) old
    redis_process.kill()
    down = client.get(f"/v1/jobs/{job['id']}")
    assert down.status_code == 503 and down.json()["error"]["code"] == "service_unavailable"
    refused = submit(client, [encode(astronaut(16))])  # a submission while it is down
    assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
    check_contract(refused)
    assert client.get("/readyz").json()["job_store"]["ready"] is False
    time.sleep(1)
    redis_process.start()
    later = submit(client, [encode(astronaut(16))])  # the retry is accepted and runs
    assert later.status_code == 202, later.text
    assert wait(client, later.json()["id"], timeout_s=180)["status"] == "succeeded"
    done = wait(client, job["id"], timeout_s=180)
    assert done["status"] == "succeeded" and done["progress"] == {
        "done": 60,
        "failed": 0,
        "total": 60,
    }
    assert len({item["output_url"] for item in done["items"]}) == 60
    assert client.get("/readyz").status_code == 200  # and the service keeps serving


def test_a_job_past_retention_answers_410(client: httpx.Client, redis_url: str) -> None:
    """Results expire with the job even while storage deletion lags: the record says 410."""
    job = wait(client, submit(client, [encode(astronaut(16))]).json()["id"])
    assert client.get(f"/v1/jobs/{job['id']}/items/0/output").status_code == 200
    redis = Redis.from_url(redis_url)
    redis.hset(f"pixserve:job:{job['id']}", "expires_at", str(time.time() - 1))
    redis.close()
    for path in ("", "/items/0/output", "/events"):
        gone = client.get(f"/v1/jobs/{job['id']}{path}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "job_expired"
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 410
    assert job["id"] not in [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]


def test_s3_inputs_need_an_s3_store(client: httpx.Client) -> None:
    response = submit(client, [], urls=["s3://pixserve-inputs/a.png"])
    assert response.status_code == 422
    assert "need an s3:// storage_url" in response.json()["error"]["message"]


@pytest.mark.timeout(540)
def test_a_large_batch_scales_dispatchers_and_models_up_then_down(client: httpx.Client) -> None:
    """The Dispatcher scales on the queue's backlog (40 items per replica here, at most
    2) and keeps as many items in flight as the queue holds, so the Upscaler's ongoing
    requests rise past its target and it scales too (at most 2); both come back to one
    replica once the queue is empty."""
    from ray import serve

    def running() -> dict[str, int]:
        app = serve.status().applications["pixserve"].deployments
        return {name: app[name].replica_states.get("RUNNING", 0)
                for name in ("Dispatcher", "Upscaler")}  # fmt: skip

    assert running() == {"Dispatcher": 1, "Upscaler": 1}
    # 32 px: one tile an item, so the backlog (what scales) is 400 items while the work
    # stays small enough for a slow 2-core machine (64 px cost 4 tiles: ~1 s an item)
    job = submit(client, [encode(astronaut(32)) for _ in range(400)], model=TINY_RRDB).json()
    peak = running()
    deadline = time.monotonic() + 300
    try:
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "partial"):
            assert time.monotonic() < deadline, "the job did not finish"
            peak = {name: max(count, running()[name]) for name, count in peak.items()}
            time.sleep(0.2)
    except AssertionError:  # an unfinished job would keep the replicas busy for later tests
        client.delete(f"/v1/jobs/{job['id']}")
        raise
    assert peak == {"Dispatcher": 2, "Upscaler": 2}, peak
    assert wait(client, job["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 120
    while running() != {"Dispatcher": 1, "Upscaler": 1}:
        assert time.monotonic() < deadline, f"no scale-down: {running()}"
        time.sleep(0.5)
