"""The operator API behind /dashboard, on the real Serve app: the overview's
deployments, replicas, per-minute series, latency and recent errors after a known
workload; every tenant's jobs; a dead-lettered item retried to success; and the admin
key required when keys are on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.jobs.queue import DEAD_LETTER
from tests.integration.test_api_keys import create_key
from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def eventually(read: Callable[[], Any], check: Callable[[Any], bool], timeout_s: float = 30) -> Any:
    """``read()`` until ``check`` holds (the live stats are flushed every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_overview_after_a_known_workload(client: httpx.Client) -> None:
    files = {"image": ("a.png", encode(astronaut(24)), "image/png")}
    for _ in range(3):
        assert client.post("/v1/upscale", files=files, data={"model": TINY_COMPACT}).is_success
    bad = client.post("/v1/upscale", files={"image": ("b.png", b"junk", "image/png")})
    assert bad.status_code == 400

    def read() -> dict[str, Any]:
        return dict(client.get("/v1/admin/overview").json())

    def complete(o: dict[str, Any]) -> bool:
        routes = {r["route"]: r for r in o["latency"]}
        seen = {r["deployment"] for r in o["replicas"]}
        return (routes.get("/v1/upscale", {}).get("requests", 0) >= 4
                and {"Ingress", "Upscaler", "Dispatcher"} <= seen
                and any(e.get("code") == "invalid_image" for e in o["errors"]))  # fmt: skip

    overview = eventually(read, complete)
    assert complete(overview), json.dumps(overview)[:2000]
    deployments = {d["name"]: d for d in overview["deployments"]}
    assert set(deployments) == {"Ingress", "Upscaler", "Denoiser", "FaceRestorer", "Diffusion",
                                "Vision", "Mesher", "Dispatcher", "Codec"}  # fmt: skip
    for deployment in deployments.values():
        assert deployment["status"] in ("HEALTHY", "UPSCALING", "DOWNSCALING")
        assert deployment["running"] >= 1 and deployment["target"] >= 1
    assert deployments["Upscaler"]["max_replicas"] == 2
    upscalers = [r for r in overview["replicas"] if r["deployment"] == "Upscaler"]
    assert all(r["device"] == "cpu" and r["gpu_share"] == 0 for r in upscalers)
    assert any(TINY_COMPACT in r["models"] for r in upscalers)
    route = next(r for r in overview["latency"] if r["route"] == "/v1/upscale")
    assert route["rejected"] >= 1  # the bad image: the caller's, not an error
    assert 0 < route["p50"] <= route["p95"] <= route["p99"]
    assert len(overview["series"]) == 60
    assert sum(p["images"] for p in overview["series"]) >= 3
    assert overview["cost"]["images"] >= 3 and overview["cost"]["gpu_cost_usd"] == 0
    error = next(e for e in overview["errors"]
                 if e.get("code") == "invalid_image" and e.get("source") == "api")  # fmt: skip
    assert error["route"] == "/v1/upscale" and error["status"] == 400 and error["message"]


def test_jobs_of_every_tenant_and_one_jobs_detail(client: httpx.Client, redis_url: str) -> None:
    token = create_key(redis_url, "admin-view-tenant")
    keyed = {"Authorization": f"Bearer {token}"}
    mine = submit(client, [encode(astronaut(16))] * 2).json()
    theirs = submit(client, [encode(astronaut(16))], "/keyed", headers=keyed).json()
    wait(client, mine["id"])
    deadline = time.monotonic() + 120  # the keyed app's rate limit allows a few reads: the
    while client.get(f"/v1/admin/jobs/{theirs['id']}").json()["job"]["status"] != "succeeded":
        assert time.monotonic() < deadline  # console (keys off here) sees every tenant's job
        time.sleep(0.2)
    table = client.get("/v1/admin/jobs", params={"limit": 200}).json()["jobs"]
    owners = {row["job"]["id"]: row["owner"] for row in table}
    assert owners[mine["id"]] == "anonymous"
    assert owners[theirs["id"]] == token.split("_")[1]  # the keyed app shares this Redis
    succeeded = client.get("/v1/admin/jobs", params={"status": "succeeded", "limit": 200})
    assert all(row["job"]["status"] == "succeeded" for row in succeeded.json()["jobs"])
    detail = client.get(f"/v1/admin/jobs/{mine['id']}").json()
    assert detail["owner"] == "anonymous" and len(detail["job"]["items"]) == 2
    assert set(detail["trace_ids"]) == {"0", "1"}  # the session app traces every request
    assert all(len(trace) == 32 for trace in detail["trace_ids"].values())
    assert client.get(f"/v1/admin/jobs/{'0' * 32}").status_code == 404
    assert client.get("/v1/admin/jobs/nope").status_code == 422  # not a job id


def test_a_dead_lettered_item_is_retried_to_success(client: httpx.Client, redis_url: str) -> None:
    """A finished job's item is made to look as after three failed deliveries (failed,
    counted, dead-lettered); Retry re-opens the job and the dispatcher completes it."""
    job = submit(client, [encode(astronaut(16))] * 2).json()
    assert wait(client, job["id"])["status"] == "succeeded"
    entry = asyncio.run(_fake_dead_letter(redis_url, job["id"], 1))
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "partial"
    dead = client.get("/v1/admin/dead-letters").json()["work"]
    assert any(d["id"] == entry and d["job"] == job["id"] for d in dead)
    retried = client.post(f"/v1/admin/dead-letters/work/{entry}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"job": job["id"], "outcome": "requeued", "job_status": "running"}
    done = wait(client, job["id"])
    assert done["status"] == "succeeded" and done["progress"] == {"done": 2, "failed": 0,
                                                                    "total": 2}  # fmt: skip
    assert done["items"][1]["error"] is None
    assert entry not in {d["id"] for d in client.get("/v1/admin/dead-letters").json()["work"]}
    again = client.post(f"/v1/admin/dead-letters/work/{entry}/retry")
    assert again.status_code == 404 and again.json()["error"]["code"] == "dead_letter_not_found"
    assert client.post("/v1/admin/dead-letters/other/1-0/retry").status_code == 422


async def _fake_dead_letter(redis_url: str, job_id: str, index: int) -> str:
    redis = Redis.from_url(redis_url)
    try:
        key = f"pixserve:job:{job_id}"
        item = json.loads(await redis.hget(f"{key}:items", str(index)) or b"{}")
        item.update(status="failed", error="failed 3 deliveries: ConnectionError: gone")
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{key}:items", str(index), json.dumps(item))
            pipe.hincrby(key, "done", -1)
            pipe.hincrby(key, "failed", 1)
            pipe.hset(key, "status", "partial")
            pipe.xadd(DEAD_LETTER, {"job": job_id, "item": str(index), "deliveries": "3",
                                    "reason": "ConnectionError: gone", "entry": "0-1"})  # fmt: skip
            *_, entry = await pipe.execute()
        return entry.decode()
    finally:
        await redis.aclose()


def test_operator_routes_need_an_admin_key_when_keys_are_on(
    client: httpx.Client, redis_url: str
) -> None:
    user = {"Authorization": f"Bearer {create_key(redis_url, 'plain-user')}"}
    admin = {"Authorization": f"Bearer {create_key(redis_url, 'operator', admin=True)}"}
    missing = client.get("/keyed/v1/admin/overview")
    assert missing.status_code == 401
    refused = client.get("/keyed/v1/admin/jobs", headers=user)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.get("/keyed/v1/admin/overview", headers=admin).status_code == 200
    assert client.get("/keyed/v1/admin/dead-letters", headers=admin).status_code == 200
    # the pages themselves are static and public; their data is what the key guards
    assert client.get("/keyed/dashboard").status_code == 200
