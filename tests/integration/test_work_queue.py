"""The Redis-stream work queue against a real redis-server: delivery, re-claim after a
consumer dies, dead-lettering after N deliveries, and a poison item not blocking others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.jobs.queue import WorkQueue
from tests.utils.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as redis_url:
        yield redis_url


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


async def queue_for(url: str, **options: int) -> tuple[Redis, WorkQueue]:
    redis = Redis.from_url(url)
    queue = WorkQueue(redis, **options)
    await queue.ensure_group()
    await queue.ensure_group()  # idempotent
    return redis, queue


def test_items_are_delivered_once_and_acked(url: str) -> None:
    async def scenario() -> None:
        redis, queue = await queue_for(url)
        await queue.enqueue("job1", range(5))
        first = await queue.read("c1", count=3, block_ms=100)
        second = await queue.read("c2", count=10, block_ms=100)
        assert [i.index for i in first] == [0, 1, 2] and [i.index for i in second] == [3, 4]
        assert all(i.deliveries == 1 and i.job_id == "job1" for i in first + second)
        for item in first + second:
            await queue.ack(item)
        assert await queue.pending_count() == 0
        assert await queue.read("c1", count=10, block_ms=100) == []
        await redis.aclose()

    run(scenario())


def test_a_dead_consumers_items_are_reclaimed(url: str) -> None:
    async def scenario() -> None:
        redis, queue = await queue_for(url, visibility_timeout_ms=200)
        await queue.enqueue("job2", range(2))
        taken = await queue.read("dies", count=2, block_ms=100)  # never acked
        assert len(taken) == 2
        assert await queue.read("survivor", count=2, block_ms=50) == []  # not yet stale
        await asyncio.sleep(0.3)
        again = await queue.read("survivor", count=2, block_ms=50)
        assert sorted(i.index for i in again) == [0, 1] and all(i.deliveries == 2 for i in again)
        await redis.aclose()

    run(scenario())


def test_poison_item_goes_to_dead_letter_and_others_finish(url: str) -> None:
    async def scenario() -> None:
        redis, queue = await queue_for(url, visibility_timeout_ms=50, max_deliveries=3)
        await queue.enqueue("job3", range(3))
        done: set[int] = set()
        for _ in range(20):
            for item in await queue.read("worker", count=3, block_ms=20):
                if item.index != 1:
                    done.add(item.index)
                    await queue.ack(item)
                elif await queue.exhausted(item):
                    await queue.dead_letter(item, "cannot decode image")
                # else: the poison item fails and is left pending for a retry
            if not await queue.pending_count() and 1 not in done and done == {0, 2}:
                break
            await asyncio.sleep(0.06)
        assert done == {0, 2}
        (dead,) = await queue.dead_letters()
        assert dead["job"] == "job3" and dead["item"] == "1" and dead["deliveries"] == "3"
        assert dead["reason"] == "cannot decode image"
        assert await queue.pending_count() == 0
        await redis.aclose()

    run(scenario())


def test_a_queue_position_counts_the_entries_ahead(url: str) -> None:
    async def scenario() -> None:
        redis, queue = await queue_for(url)
        entries = await queue.enqueue("job4", range(6))
        await queue.read("c1", count=2, block_ms=100)  # 0 and 1 are being delivered
        assert [await queue.position(e) for e in entries] == [0, 0, 0, 1, 2, 3]
        assert await queue.position(entries[5], limit=2) == 2  # the count stops there
        await redis.aclose()

    run(scenario())
