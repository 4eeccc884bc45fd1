"""Job records on a real redis-server: create + enqueue atomically, tenant isolation,
exactly-once item outcomes, final status, cancel, expiry, events, idempotency keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.jobs.models import JobStatus
from services.jobs.progress import ProgressReporter, item_key
from services.jobs.queue import WorkQueue
from services.jobs.store import IdempotencyConflict, JobExpired, JobNotFound, JobStore
from tests.utils.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Scenario = Callable[[JobStore, WorkQueue], Awaitable[None]]


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as redis_url:
        yield redis_url


def run(url: str, scenario: Scenario, retention_s: int = 3600) -> None:
    async def main() -> None:
        redis = Redis.from_url(url)
        queue = WorkQueue(redis)
        await queue.ensure_group()
        try:
            await scenario(JobStore(redis, retention_s), queue)
        finally:
            await redis.aclose()

    asyncio.run(main())


PIPELINE = {"name": "upscale", "model": "x4plus", "scale": 2}


def test_create_enqueues_every_item_and_reads_back(url: str) -> None:
    async def scenario(store: JobStore, queue: WorkQueue) -> None:
        job = await store.create("key-a", PIPELINE, ["a.png", "b.png", "c.png"])
        items = await queue.read("d1", count=10, block_ms=100)
        assert [(i.job_id, i.index) for i in items] == [(job.id, 0), (job.id, 1), (job.id, 2)]
        read = await store.read(job.id, "key-a")
        assert read.status == JobStatus.QUEUED and read.progress.total == 3
        assert [i.input for i in read.items] == ["a.png", "b.png", "c.png"]
        with pytest.raises(JobNotFound):
            await store.read(job.id, "key-b")  # another tenant sees nothing

    run(url, scenario)


def test_items_finish_once_and_the_job_ends_partial(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", PIPELINE, ["a", "b"])
        assert await store.start_item(job.id, 0)
        assert (await store.read(job.id, "k")).status == JobStatus.RUNNING
        assert await store.finish_item(job.id, 0, output_key="jobs/x/0.png") == (True, "running")
        assert await store.finish_item(job.id, 0, output_key="jobs/x/0.png") == (False, "running")
        assert not await store.start_item(job.id, 0)  # a re-delivery finds it done
        assert await store.finish_item(job.id, 1, error="cannot decode") == (True, "partial")
        read = await store.read(job.id, "k")
        assert read.status == JobStatus.PARTIAL and read.progress.done == 1
        assert read.progress.failed == 1 and read.items[1].error == "cannot decode"
        assert read.items[0].output_key == "jobs/x/0.png" and read.finished_at is not None
        assert "queue_wait_s" in read.metrics and "run_s" in read.metrics

    run(url, scenario)


def test_a_preset_items_texts_read_back_as_written(url: str) -> None:
    """Texts pass through the store's Lua as they are: empty lists stay lists."""
    texts = {"describe": {"caption": "a woman in a suit", "tags": [], "nsfw": 0.01234},
             "other": {"tags": [{"label": "face", "score": 0.5}]}}  # fmt: skip

    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", {"name": "preset", "preset": "archive"}, ["a"])
        assert await store.finish_item(job.id, 0, output_key="o.png", texts=texts)
        (item,) = (await store.read(job.id, "k")).items
        assert item.texts == texts and item.output_key == "o.png"

    run(url, scenario)


def test_all_succeeded_and_all_failed(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        good = await store.create("k", PIPELINE, ["a"])
        assert (await store.finish_item(good.id, 0, output_key="o"))[1] == "succeeded"
        bad = await store.create("k", PIPELINE, ["a"])
        assert (await store.finish_item(bad.id, 0, error="e"))[1] == "failed"

    run(url, scenario)


def test_cancel_stops_items_from_starting(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", PIPELINE, ["a", "b"])
        canceled = await store.cancel(job.id, "k")
        assert canceled.status == JobStatus.CANCELED
        assert not await store.start_item(job.id, 0)
        await store.finish_item(job.id, 1, output_key="late")
        assert (await store.read(job.id, "k")).status == JobStatus.CANCELED

    run(url, scenario)


def test_expired_jobs_answer_410(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", PIPELINE, ["a"])
        await asyncio.sleep(1.1)
        with pytest.raises(JobExpired):
            await store.read(job.id, "k")

    run(url, scenario, retention_s=1)


def test_list_pages_newest_first_with_a_status_filter(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        ids = [(await store.create("k", PIPELINE, ["a"])).id for _ in range(5)]
        await store.finish_item(ids[0], 0, output_key="o")
        first, cursor = await store.list_jobs("k", limit=3)
        assert [j.id for j in first] == ids[:1:-1] and cursor is not None
        rest, end = await store.list_jobs("k", cursor=cursor, limit=3)
        assert [j.id for j in rest] == [ids[1], ids[0]] and end is None
        done, _ = await store.list_jobs("k", status=JobStatus.SUCCEEDED)
        assert [j.id for j in done] == [ids[0]]
        assert (await store.list_jobs("other"))[0] == []

    run(url, scenario)


def test_events_resume_after_an_id(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", PIPELINE, ["a", "b"])
        await store.finish_item(job.id, 0, output_key="o")
        events = await store.events(job.id, block_ms=100)
        assert [e[1]["type"] for e in events] == ["job", "item"]
        await store.finish_item(job.id, 1, output_key="o")
        later = await store.events(job.id, after=events[-1][0], block_ms=100)
        assert len(later) == 1 and later[0][1]["job_status"] == "succeeded"
        assert later[0][1]["done"] == "2" and later[0][1]["total"] == "2"

    run(url, scenario)


def test_idempotency_keys(url: str) -> None:
    async def scenario(store: JobStore, _: WorkQueue) -> None:
        assert await store.remember_idempotency("k", "req-1", "hash-a", "job-1") == "job-1"
        assert await store.remember_idempotency("k", "req-1", "hash-a", "job-2") == "job-1"
        with pytest.raises(IdempotencyConflict):
            await store.remember_idempotency("k", "req-1", "hash-b", "job-3")
        assert await store.remember_idempotency("other", "req-1", "hash-b", "job-4") == "job-4"
        await store.forget_idempotency("k", "req-1", "job-9")  # not its job: kept
        assert await store.remember_idempotency("k", "req-1", "hash-a", "job-5") == "job-1"
        await store.forget_idempotency("k", "req-1", "job-1")  # its submission failed
        assert await store.remember_idempotency("k", "req-1", "hash-b", "job-6") == "job-6"

    run(url, scenario)


def test_progress_inside_an_item_reaches_the_stream_and_the_envelope(url: str) -> None:
    """The replica's reporter (a blocking client, as on a model's thread): a running
    item shows its latest count; reports closer than the interval are dropped, the last
    step never is."""

    async def scenario(store: JobStore, _: WorkQueue) -> None:
        job = await store.create("k", PIPELINE, ["a", "b"])
        await store.start_item(job.id, 0)
        reporter = ProgressReporter(SyncRedis.from_url(url), interval_s=60)
        key = item_key(job.id, 0)
        for step in range(1, 9):
            await asyncio.to_thread(reporter.report, key, step, 8, "tiles")
        reporter.report(None, 1, 8, "tiles")  # a sync request's call: not a job item
        reporter.report("not-a-job:0", 1, 8, "tiles")  # refused, never raised
        events = [fields for _, fields in await store.events(job.id, block_ms=100)]
        steps = [(e["step"], e["steps"], e["unit"]) for e in events if e["type"] == "progress"]
        assert steps == [("1", "8", "tiles"), ("8", "8", "tiles")]  # throttled; last kept
        assert [e["status"] for e in events if e["type"] == "item"] == ["running"]
        read = await store.read(job.id, "k")
        progress = read.items[0].progress
        assert progress is not None and (progress.step, progress.steps) == (8, 8)
        assert read.items[1].progress is None  # queued
        await store.finish_item(job.id, 0, output_key="o")
        assert (await store.read(job.id, "k")).items[0].progress is None  # ended

    run(url, scenario)
