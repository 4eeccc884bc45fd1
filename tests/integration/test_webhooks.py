"""Webhook delivery against a real local HTTP receiver: Standard Webhooks signatures
that verify, retries keeping the webhook-id, no retry on 4xx, the circuit breaker, and
item/completed events from the dispatcher signed with the server's or the key's own
secret (real Redis, tiny model). Every delivery is verified twice: by our verifier and
by the reference ``standardwebhooks`` library a receiver would use."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from services.config import Settings
from services.errors import Unauthorized
from services.jobs.queue import OUTBOX, OUTBOX_GROUP
from services.jobs.service import JobRequest
from services.jobs.store import COMPLETED
from services.jobs.wiring import build_dispatcher
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.net.fetch import SafeFetcher
from services.pipelines.tasks import UpscaleTask
from services.webhooks.delivery import WebhookSender
from services.webhooks.signing import generate_secret, verify
from tests.utils.images import astronaut, encode
from tests.utils.receiver import Receiver
from tests.utils.redis_server import redis_server
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SECRET = generate_secret()


def sender(**options: Any) -> WebhookSender:
    fetcher = SafeFetcher(max_bytes=10_000, allow_http=True, policy=lambda a: a.is_loopback)
    return WebhookSender(fetcher, base_delay_s=0.01, **options)


def test_signed_delivery_with_retries_keeping_the_id(receiver: Receiver) -> None:
    receiver.plan = [500, 503]
    report = asyncio.run(sender().deliver(receiver.url, "msg-1", {"type": "job.completed"}, SECRET))
    assert report.delivered and report.attempts == 3 and report.statuses == [500, 503, 200]
    assert {headers["webhook-id"] for headers, _ in receiver.calls} == {"msg-1"}
    for headers, body in receiver.calls:
        verify(SECRET, headers, body)
        assert Webhook(SECRET).verify(body, headers) == {"type": "job.completed"}


def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.plan = [400]
    report = asyncio.run(sender().deliver(receiver.url, "msg-2", {}, SECRET))
    assert not report.delivered and report.attempts == 1


def test_circuit_breaker_opens_for_a_failing_host(receiver: Receiver) -> None:
    receiver.plan = [500] * 10
    webhooks = sender(max_attempts=2, breaker_threshold=3, breaker_cooldown_s=60)

    async def scenario() -> list[Any]:
        return [await webhooks.deliver(receiver.url, f"m{i}", {}, SECRET) for i in range(3)]

    first, second, third = asyncio.run(scenario())
    assert first.attempts == 2 and second.attempts == 1  # opened after 3 failures
    assert second.statuses[-1] == "circuit-open" and third.statuses == ["circuit-open"]
    assert len(receiver.calls) == 3


def hook_settings(base: Settings, redis_url: str, tmp_path: Path, **extra: Any) -> Settings:
    """Settings whose webhooks may reach the loopback receiver over http."""
    return base.model_copy(update={
        "redis_url": redis_url, "storage_url": f"file://{tmp_path / 'objects'}",
        "webhook_secret": SecretStr(SECRET), "webhook_allow_http": True,
        "webhook_allowed_networks": ["127.0.0.0/8"], **extra,
    })  # fmt: skip


def test_dispatcher_sends_item_and_completed_events(
    receiver: Receiver, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    """Through the wiring the deployments use: a job made without a key is signed with
    the server's secret, a keyed job with its key's own secret (and nothing else)."""

    async def scenario(url: str) -> tuple[str, str]:
        settings = hook_settings(tiny_settings, url, tmp_path)
        dispatcher, jobs = build_dispatcher(settings, EngineBackend(tiny_engine))
        outbox = dispatcher.outbox
        assert outbox is not None
        _, key = await jobs.secrets.keys.create("tenant")
        pipeline = UpscaleTask(model=TINY_COMPACT, format="png")
        anonymous = await jobs.submit("anonymous", JobRequest(
            pipeline, [(f"{i}.png", encode(astronaut(16))) for i in range(3)], [],
            receiver.url, ["start", "item", "completed"]), None)  # fmt: skip
        await jobs.submit(
            key.prefix,
            JobRequest(pipeline, [("k.png", encode(astronaut(16)))], [], receiver.url),
            None,
        )
        await outbox.queue.ensure_group()
        while await dispatcher.run_once("d1", block_ms=100):
            pass
        await outbox.pump("d1")
        await outbox.drain()
        assert all(r.delivered for r in outbox.reports) and len(outbox.reports) == 6
        assert await outbox.queue.redis.xpending(OUTBOX, OUTBOX_GROUP) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }  # every event acked once delivered
        secret = await jobs.secrets.keys.webhook_secret(key.prefix)
        assert secret is not None and secret != SECRET
        await jobs.store.redis.aclose()
        return anonymous.id, secret

    with redis_server(tmp_path / "redis") as url:
        anonymous_id, key_secret = asyncio.run(scenario(url))
    ids = [headers["webhook-id"] for headers, _ in receiver.calls]
    assert len(ids) == len(set(ids)) == 6
    bodies = [json.loads(body) for _, body in receiver.calls]
    assert all(set(b) == {"type", "timestamp", "data"} for b in bodies)  # Standard Webhooks'
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", b["timestamp"])
               for b in bodies)  # fmt: skip
    (started,) = [b["data"] for b in bodies if b["type"] == "job.started"]  # asked by one job
    assert started["id"] == anonymous_id and started["started_at_iso"] is not None
    completed = [b["data"] for b in bodies if b["type"] == "job.completed"]
    assert len(completed) == 2 and {job["status"] for job in completed} == {"succeeded"}
    items = [b["data"]["item"] for b in bodies if b["type"] == "job.item"]
    assert sorted(item["index"] for item in items) == [0, 1, 2]  # the keyed job: completed only
    assert all(item["output_url"].endswith("/output") for item in items)
    internals = {"input", "output_key", "traceparent"}  # never in a payload
    every_item = items + [i for job in completed for i in job["items"]]
    assert every_item and not any(internals & set(item) for item in every_item)
    for (headers, body), payload in zip(receiver.calls, bodies, strict=True):
        job_id = payload["data"].get("job_id") or payload["data"]["id"]
        right = SECRET if job_id == anonymous_id else key_secret
        verify(right, headers, body)
        assert Webhook(right).verify(body, headers) == payload
        wrong = key_secret if job_id == anonymous_id else SECRET
        with pytest.raises(Unauthorized):
            verify(wrong, headers, body)
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(body, headers)


def test_outbox_reclaims_a_dead_senders_events_and_dead_letters_refusals(
    receiver: Receiver, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:

    async def scenario(url: str) -> list[dict[str, str]]:
        settings = hook_settings(tiny_settings, url, tmp_path, visibility_timeout_s=0.2)
        dispatcher, jobs = build_dispatcher(settings, EngineBackend(tiny_engine))
        assert dispatcher.outbox is not None
        outbox = dispatcher.outbox
        outbox.sender.base_delay_s = 0.01
        await outbox.queue.ensure_group()
        request = JobRequest(UpscaleTask(model=TINY_COMPACT),
                             [("a.png", encode(astronaut(16)))] * 2, [], receiver.url,
                             ["item", "completed"])  # fmt: skip
        await jobs.submit("anonymous", request, None)
        while await dispatcher.run_once("d1", block_ms=100):
            pass
        taken = await outbox.queue.read("crashed", count=10, block_ms=None)
        assert len(taken) == 3 and not receiver.calls  # a sender died holding them
        await asyncio.sleep(0.3)  # past the visibility timeout
        await outbox.pump("survivor")
        await outbox.drain()
        receiver.plan = [410]  # the receiver refuses: no retry, dead-lettered
        await jobs.submit("anonymous", JobRequest(UpscaleTask(model=TINY_COMPACT),
                          [("b.png", encode(astronaut(16)))], [], receiver.url), None)  # fmt: skip
        while await dispatcher.run_once("d1", block_ms=100):
            pass
        await outbox.pump("survivor")
        await outbox.drain()
        assert await outbox.queue.redis.xpending(OUTBOX, OUTBOX_GROUP) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
        dead = await outbox.queue.dead_letters()
        await jobs.store.redis.aclose()
        return dead

    with redis_server(tmp_path / "redis") as url:
        dead = asyncio.run(scenario(url))
    ids = [headers["webhook-id"] for headers, _ in receiver.calls]
    assert len(ids) == len(set(ids)) == 4  # 3 re-claimed events once each, 1 refused
    (letter,) = dead
    assert letter["item"] == str(COMPLETED) and "[410]" in letter["reason"]
