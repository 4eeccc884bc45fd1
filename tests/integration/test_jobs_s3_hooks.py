"""Jobs on the app that stores objects in S3 (moto's server over HTTP) and may send
webhooks to loopback receivers, with API keys on: s3:// inputs, presigned outputs,
per-key webhook secrets, and a Dispatcher replica killed mid-batch."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from services.webhooks.signing import verify
from tests.integration.conftest import HOOKS_DB, HOOKS_PREFIX, on_database, s3_client
from tests.integration.test_api_keys import create_key
from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
APP = "/hooks"


@pytest.fixture
def key(redis_url: str) -> dict[str, str]:
    token = create_key(on_database(redis_url, HOOKS_DB), "hooks-tenant")
    return {"Authorization": f"Bearer {token}"}


def test_s3_inputs_and_presigned_outputs(
    client: httpx.Client, s3_endpoint: str, key: dict[str, str]
) -> None:
    bucket = s3_client(s3_endpoint)
    for i in range(3):
        bucket.put_object(Bucket="pixserve-inputs", Key=f"{HOOKS_PREFIX}/mine/{i}.png",
                          Body=encode(astronaut(16 + i)))  # fmt: skip
    uris = [f"s3://pixserve-inputs/{HOOKS_PREFIX}/mine/{i}.png" for i in range(3)]
    job = submit(client, [encode(astronaut(20))], APP, key, urls=uris).json()
    done = wait(client, job["id"], APP, key)
    assert done["status"] == "succeeded", done
    assert [item["name"] for item in done["items"][1:]] == uris
    for item, width in zip(done["items"], [20, 16, 17, 18], strict=True):
        assert (
            item["output_url"].startswith(s3_endpoint) and "X-Amz-Signature" in item["output_url"]
        )
        output = httpx.get(item["output_url"])
        assert output.status_code == 200 and output.content.startswith(b"\x89PNG")
        assert int.from_bytes(output.content[16:20], "big") == 2 * width
    stored = bucket.list_objects_v2(Bucket="pixserve-outputs",
                                    Prefix=f"{HOOKS_PREFIX}/jobs/{job['id']}/")  # fmt: skip
    assert stored["KeyCount"] == 4


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://pixserve-outputs/hooks/x.png", "must be in the inputs bucket"),
        ("s3://pixserve-inputs/other-prefix/x.png", "under the prefix"),
        ("s3://pixserve-inputs/hooks/jobs/someone/00000", "belong to the platform"),
        ("s3://pixserve-inputs/hooks/missing.png", "do not exist"),
        ("s3://pixserve-inputs/hooks/../x.png", "invalid object key"),
    ],
)
def test_bad_s3_inputs_are_refused(
    client: httpx.Client, key: dict[str, str], uri: str, problem: str
) -> None:
    response = submit(client, [], APP, key, urls=[uri])
    assert response.status_code == 422 and problem in response.json()["error"]["message"]


def test_webhook_secret_per_key(client: httpx.Client, key: dict[str, str]) -> None:
    first = client.get(f"{APP}/v1/webhooks/secret", headers=key).json()
    assert first["secret"].startswith("whsec_")
    rotated = client.post(f"{APP}/v1/webhooks/secret/rotate", headers=key).json()
    assert rotated["key"] == first["key"] and rotated["secret"] != first["secret"]
    assert client.get(f"{APP}/v1/webhooks/secret", headers=key).json() == rotated
    assert client.get(f"{APP}/v1/webhooks/secret").status_code == 401
    keyless = client.get("/v1/webhooks/secret")  # the main app runs without keys
    assert keyless.status_code == 422 and "webhook_secret" in keyless.json()["error"]["message"]


def test_killing_the_dispatcher_mid_batch_loses_nothing(
    client: httpx.Client, key: dict[str, str], receiver: Receiver, s3_endpoint: str
) -> None:
    """ray.kill the Dispatcher replica while a 200-item job with item and completed
    webhooks runs: Serve starts a new replica, which re-claims the dead one's items
    after the visibility timeout (5 s here); one output per item, every webhook event
    delivered under one stable id."""
    # 4 tiles each, so the job is still running when the replica dies
    images = [encode(astronaut(48 + i % 7)) for i in range(200)]
    job = submit(client, images, APP, key, webhook_url=receiver.url,
                 webhook_events=["item", "completed"]).json()  # fmt: skip
    orphans = kill_dispatcher_while_running(client, job["id"], key)
    done = wait(client, job["id"], APP, key, timeout_s=240)
    assert done["status"] == "succeeded" and done["progress"]["done"] == 200
    assert all(item["error"] is None for item in done["items"])
    # every item the dead replica held was re-run on the successor, and none ran thrice
    assert all(done["items"][index]["attempts"] == 2 for index in orphans)
    assert max(item["attempts"] for item in done["items"]) == 2
    stored = s3_client(s3_endpoint).list_objects_v2(
        Bucket="pixserve-outputs", Prefix=f"{HOOKS_PREFIX}/jobs/{job['id']}/"
    )
    assert stored["KeyCount"] == 200
    deadline = time.monotonic() + 60  # the dead replica's events come back after 5 s
    while len({headers["webhook-id"] for headers, _ in receiver.calls}) < 201:
        assert time.monotonic() < deadline, "webhook events are missing"
        time.sleep(0.1)
    # Nothing lost: every event arrives, under its own stable id. Delivery is at least
    # once: a POST in flight when the replica died is sent again by its successor with
    # the same webhook-id, which is what receivers de-duplicate on.
    ids = [headers["webhook-id"] for headers, _ in receiver.calls]
    expected = {f"{job['id']}.item.{i}" for i in range(200)} | {f"{job['id']}.completed"}
    assert set(ids) == expected
    assert len(ids) - len(expected) <= 64, "more re-sends than deliveries can be in flight"
    secret = client.get(f"{APP}/v1/webhooks/secret", headers=key).json()["secret"]
    for headers, body in receiver.calls:
        verify(secret, headers, body)
        payload = json.loads(body)
        data = payload["data"]  # Standard Webhooks' {type, timestamp, data}
        event = f"item.{data['item']['index']}" if payload["type"] == "job.item" else "completed"
        assert headers["webhook-id"] == f"{job['id']}.{event}"  # one id per event


def kill_dispatcher_while_running(
    client: httpx.Client, job_id: str, key: dict[str, str], tries: int = 3
) -> set[int]:
    """ray.kill the Dispatcher replica at a moment it runs items of the job; return the
    items it left running. Kills again (the successor) if it died between two items,
    so the test never passes without an orphan to recover."""
    import ray

    for _ in range(tries):
        deadline = time.monotonic() + 60
        while not running_items(client, job_id, key):
            assert time.monotonic() < deadline, "no item of the job started"
            time.sleep(0.05)
        prefix = "SERVE_REPLICA::pixserve-hooks#Dispatcher"
        names = ray.util.list_named_actors(all_namespaces=True)
        (replica,) = [n for n in names if n["name"].startswith(prefix)]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
        time.sleep(0.5)  # dead by now; its items are re-claimed only after 5 s
        orphans = running_items(client, job_id, key)
        if orphans:
            return orphans
    raise AssertionError(f"no kill of {tries} caught an item running")


def running_items(client: httpx.Client, job_id: str, key: dict[str, str]) -> set[int]:
    job = client.get(f"{APP}/v1/jobs/{job_id}", headers=key).json()
    assert job["status"] != "succeeded", "the job ended before the kill: nothing was tested"
    return {item["index"] for item in job["items"] if item["status"] == "running"}
