"""Webhook delivery against a real local HTTP receiver: Standard Webhooks signatures
that verify, retries keeping the webhook-id, no retry on 4xx, the circuit breaker, and
item/completed events from the dispatcher (real Redis, tiny model)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.config import Settings
from services.jobs.dispatcher import Dispatcher
from services.jobs.notify import JobNotifier
from services.jobs.queue import WorkQueue
from services.jobs.store import JobStore, new_job_id
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.tiny import TINY_COMPACT
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.net.fetch import SafeFetcher
from services.storage.files import FileObjectStore
from services.webhooks.delivery import WebhookSender
from services.webhooks.signing import generate_secret, verify
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SECRET = generate_secret()


class Receiver:
    """Records each call; answers ``plan`` statuses in turn, then 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.plan: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.plan.pop(0) if receiver.plan else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.server.shutdown()


def sender(**options: Any) -> WebhookSender:
    fetcher = SafeFetcher(max_bytes=10_000, allow_http=True, policy=lambda a: a.is_loopback)
    return WebhookSender(fetcher, SECRET, base_delay_s=0.01, **options)


def test_signed_delivery_with_retries_keeping_the_id(receiver: Receiver) -> None:
    receiver.plan = [500, 503]
    report = asyncio.run(sender().deliver(receiver.url, "msg-1", {"type": "job.completed"}))
    assert report.delivered and report.attempts == 3 and report.statuses == [500, 503, 200]
    assert {headers["webhook-id"] for headers, _ in receiver.calls} == {"msg-1"}
    for headers, body in receiver.calls:
        verify(SECRET, headers, body)
        assert json.loads(body) == {"type": "job.completed"}


def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.plan = [400]
    report = asyncio.run(sender().deliver(receiver.url, "msg-2", {}))
    assert not report.delivered and report.attempts == 1


def test_circuit_breaker_opens_for_a_failing_host(receiver: Receiver) -> None:
    receiver.plan = [500] * 10
    webhooks = sender(max_attempts=2, breaker_threshold=3, breaker_cooldown_s=60)

    async def scenario() -> list[Any]:
        return [await webhooks.deliver(receiver.url, f"m{i}", {}) for i in range(3)]

    first, second, third = asyncio.run(scenario())
    assert first.attempts == 2 and second.attempts == 1  # opened after 3 failures
    assert second.statuses[-1] == "circuit-open" and third.statuses == ["circuit-open"]
    assert len(receiver.calls) == 3


def test_dispatcher_sends_item_and_completed_events(
    receiver: Receiver, tmp_path: Path, tiny_settings: Settings
) -> None:
    store_models = ModelStore(
        tiny_settings.model_store, load_manifest(tiny_settings.extra_manifest)
    )
    engine = UpscaleEngine(tiny_settings, store_models)
    engine.load()

    async def scenario(url: str) -> None:
        redis = Redis.from_url(url)
        store, queue = JobStore(redis), WorkQueue(redis)
        objects = FileObjectStore(tmp_path / "objects")
        await queue.ensure_group()
        notifier = JobNotifier(store, sender())

        async def load(name: str) -> bytes:
            return objects.get("inputs", name)

        dispatcher = Dispatcher(store, queue, objects, EngineBackend(engine),
                                load_manifest(tiny_settings.extra_manifest), tiny_settings,
                                load, notifier)  # fmt: skip
        job_id = new_job_id()
        for i in range(3):
            objects.put("inputs", f"in/{i}", encode(astronaut(16)), "image/png")
        await store.create("owner", {"model": TINY_COMPACT, "format": "png"},
                           [f"in/{i}" for i in range(3)], receiver.url, job_id,
                           ["item", "completed"])  # fmt: skip
        await dispatcher.run_once("d1", block_ms=100)
        await notifier.drain()
        reports = list(notifier.reports)  # a delivery may finish before drain() is called
        assert all(r.delivered for r in reports) and len(reports) == 4
        await redis.aclose()

    with redis_server(tmp_path / "redis") as url:
        asyncio.run(scenario(url))
    ids = [headers["webhook-id"] for headers, _ in receiver.calls]
    assert len(ids) == len(set(ids)) == 4
    bodies = [json.loads(body) for _, body in receiver.calls]
    completed = [b for b in bodies if b["type"] == "job.completed"]
    assert len(completed) == 1 and completed[0]["job"]["status"] == "succeeded"
    assert sorted(b["item"]["index"] for b in bodies if b["type"] == "job.item") == [0, 1, 2]
    for headers, body in receiver.calls:
        verify(SECRET, headers, body)
