"""The WebSocket channel's flow control, in-process over the fake model backend and a
real redis-server (test_channel.py runs it through Serve): events are never dropped,
previews are coalesced to each item's newest, and at most ``PREVIEW_CREDITS`` are in
flight until the client acknowledges them."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from services.api.app import create_api
from services.api.routes.channel import PREVIEW_CREDITS
from services.config import Settings
from services.jobs.progress import ProgressReporter, item_key, watchers_key
from services.jobs.wiring import build_job_service
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("channel-redis")) as running:
        yield running


@pytest.fixture
def client(server: RedisServer, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(redis_url=server.url, storage_url=f"file://{tmp_path}",
                        models=["x4plus"], default_model="x4plus")  # fmt: skip
    backend = FakeBackend(loaded=["x4plus"])
    with TestClient(create_api(settings, backend, build_job_service(settings, backend))) as test:
        yield test


def test_previews_are_coalesced_and_wait_for_credit(
    client: TestClient, server: RedisServer
) -> None:
    image = base64.b64encode(encode(astronaut(16))).decode()
    job = client.post("/v1/jobs", json={"images": [image]}).json()  # queued: no dispatcher
    reporter = ProgressReporter(redis.Redis.from_url(server.url), interval_s=0)
    key = item_key(job["id"], 0)
    reporter.client.set(watchers_key(job["id"]), 1)  # type: ignore[union-attr]

    def report(step: int) -> None:
        reporter.report(key, step, 100, "tiles", preview=f"jpeg-{step}".encode)

    for step in range(1, 11):  # ten reports before anyone reads: one batch
        report(step)
    with client.websocket_connect("/v1/ws") as socket:
        assert socket.receive_json() == {"type": "ready"}
        socket.send_json({"type": "subscribe", "job_id": job["id"]})
        frames = [socket.receive_json() for _ in range(12)]  # queued, ten progress, a preview
        events = [f for f in frames if f["type"] == "event"]
        assert [e["data"]["step"] for e in events if e["event"] == "progress"] == list(range(1, 11))
        (preview,) = [f for f in frames if f["type"] == "preview"]
        assert preview["seq"] == 1 and preview["step"] == 10  # only the newest
        assert base64.b64decode(preview["image"].partition(",")[2]) == b"jpeg-10"
        report(11)
        second = [socket.receive_json() for _ in range(2)]
        assert [f["type"] for f in second] == ["event", "preview"] and second[1]["seq"] == 2
        report(12)  # no credit left: its progress event comes, its preview does not
        assert socket.receive_json()["data"]["step"] == 12
        assert PREVIEW_CREDITS == 2
        socket.send_json({"type": "ack", "seq": 2})
        report(13)
        third = [socket.receive_json() for _ in range(2)]
        assert third[1]["type"] == "preview" and third[1]["seq"] == 3 and third[1]["step"] == 13


def test_a_subscription_renews_the_watchers_key(client: TestClient, server: RedisServer) -> None:
    image = base64.b64encode(encode(astronaut(16))).decode()
    job = client.post("/v1/jobs", json={"images": [image]}).json()
    direct = redis.Redis.from_url(server.url)
    assert not direct.exists(watchers_key(job["id"]))  # nobody watches: no preview is drawn
    with client.websocket_connect("/v1/ws", subprotocols=["pixserve"]) as socket:
        socket.receive_json()
        socket.send_json({"type": "subscribe", "job_id": job["id"]})
        socket.receive_json()  # the queued event
        deadline = time.monotonic() + 10
        while direct.ttl(watchers_key(job["id"])) < 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the subscription's renewal task runs beside the stream
        assert 0 < direct.ttl(watchers_key(job["id"])) <= 30
