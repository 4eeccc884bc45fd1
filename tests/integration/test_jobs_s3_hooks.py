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
    assert [item["input"] for item in done["items"][1:]] == uris
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
    import ray

    # 4 tiles each, so the job is still running when the replica dies
    images = [encode(astronaut(48 + i % 7)) for i in range(200)]
    job = submit(client, images, APP, key, webhook_url=receiver.url,
                 webhook_events=["item", "completed"]).json()  # fmt: skip
    deadline = time.monotonic() + 60
    while client.get(f"{APP}/v1/jobs/{job['id']}", headers=key).json()["progress"]["done"] < 20:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    names = ray.util.list_named_actors(all_namespaces=True)
    (replica,) = [n for n in names
                  if n["name"].startswith("SERVE_REPLICA::pixserve-hooks#Dispatcher")]  # fmt: skip
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    at_kill = client.get(f"{APP}/v1/jobs/{job['id']}", headers=key).json()["progress"]["done"]
    assert at_kill < 200, "the job ended before the kill: nothing was tested"
    done = wait(client, job["id"], APP, key, timeout_s=240)
    assert done["status"] == "succeeded" and done["progress"]["done"] == 200
    assert all(item["error"] is None for item in done["items"])
    assert max(item["attempts"] for item in done["items"]) == 2  # re-run on the successor
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
        event = f"item.{payload['item']['index']}" if payload["type"] == "job.item" else "completed"
        assert headers["webhook-id"] == f"{job['id']}.{event}"  # one id per event
