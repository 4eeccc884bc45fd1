"""The dispatcher on a real redis-server, a file:// object store and the in-process
engine (tiny model): outputs once per item, poison items fail alone, a dead consumer's
items are finished by another, finished outputs are not recomputed, transient
failures are retried and then dead-lettered, canceled jobs do not run; a dispatcher
process SIGKILLed between writing an output and acking it costs no recompute, leaves
one result and one webhook event."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.config import Settings
from services.errors import ServiceUnavailable
from services.jobs.dispatcher import Dispatcher
from services.jobs.models import Job, JobStatus
from services.jobs.outputs import output_key
from services.jobs.queue import OUTBOX, WorkQueue
from services.jobs.store import COMPLETED, JobStore, new_job_id
from services.models.manifest import load_manifest
from services.models.tile_io import TileJob, TileOutput
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.storage.files import FileObjectStore
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import redis_server
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class CountingBackend(EngineBackend):
    """The real engine, counting calls and optionally failing the first few."""

    def __init__(self, engine: UpscaleEngine, failures: int = 0,
                 failure: Exception | None = None) -> None:  # fmt: skip
        super().__init__(engine)
        self.calls = 0
        self.failures = failures
        self.failure = failure or ConnectionError("model deployment unreachable (simulated)")

    async def upscale_image(self, job: TileJob) -> TileOutput:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.failure
        return await super().upscale_image(job)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as redis_url:
        yield redis_url


class Harness:
    def __init__(self, redis: Redis, objects: FileObjectStore, settings: Settings,
                 backend: EngineBackend, visibility_ms: int = 60_000) -> None:  # fmt: skip
        self.store = JobStore(redis)
        self.queue = WorkQueue(redis, visibility_timeout_ms=visibility_ms, max_deliveries=3)
        self.objects = objects

        async def load(name: str) -> bytes:
            return objects.get("inputs", name)

        manifest = load_manifest(settings.extra_manifest)
        self.dispatcher = Dispatcher(self.store, self.queue, objects, backend, manifest,
                                     settings, load)  # fmt: skip

    async def submit(self, images: list[bytes], **pipeline: Any) -> str:
        await self.queue.ensure_group()
        job_id = new_job_id()
        names = []
        for index, data in enumerate(images):
            name = f"jobs/{job_id}/{index:05d}"
            self.objects.put("inputs", name, data, "application/octet-stream")
            names.append(name)
        params = {"task": "upscale", "model": TINY_COMPACT, "format": "png", **pipeline}
        await self.store.create("owner", params, names, "https://example.com/hook", job_id,
                                ["item", "completed"])  # fmt: skip
        return job_id

    async def webhook_events(self) -> list[int]:
        """The item indices in the webhook outbox (-1: a job's completed event)."""
        entries: Any = await self.queue.redis.xrange(OUTBOX)
        return sorted(int(fields[b"item"]) for _, fields in entries)

    async def drain(self, consumer: str = "d1", rounds: int = 40) -> None:
        for _ in range(rounds):
            await self.dispatcher.run_once(consumer, batch=8, block_ms=50)
            if not await self.queue.pending_count() and not await self._waiting():
                return
            await asyncio.sleep(0.02)

    async def until(self, job_id: str, status: JobStatus, rounds: int = 30) -> Job:
        """Dispatch in short rounds until the job reaches ``status`` (or rounds run out)."""
        for _ in range(rounds):
            await self.dispatcher.run_once("d1", block_ms=50)
            job = await self.store.read(job_id, "owner")
            if job.status == status:
                break
            await asyncio.sleep(0.1)
        return job

    async def _waiting(self) -> int:
        info = await self.queue.redis.xinfo_groups("pixserve:work")
        return int(info[0]["lag"] or 0)


def run(url: str, tmp_path: Path, settings: Settings, backend: EngineBackend,
        scenario: Any, visibility_ms: int = 60_000) -> None:  # fmt: skip
    async def main() -> None:
        redis = Redis.from_url(url)
        try:
            harness = Harness(redis, FileObjectStore(tmp_path / "objects"), settings, backend,
                              visibility_ms)  # fmt: skip
            await scenario(harness)
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_a_batch_with_a_poison_item_ends_partial(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    async def scenario(h: Harness) -> None:
        images = [encode(astronaut(16 + i)) for i in range(5)] + [b"not an image at all"]
        job_id = await h.submit(images)
        await h.drain()
        job = await h.store.read(job_id, "owner")
        assert job.status == JobStatus.PARTIAL and job.progress.done == 5
        assert job.items[5].error is not None and job.items[5].error.startswith("invalid_image")
        for index in range(5):
            assert h.objects.exists("outputs", output_key(job_id, index, "png"))
        assert await h.webhook_events() == [COMPLETED, *range(6)]  # completed once

    run(url, tmp_path, tiny_settings, EngineBackend(tiny_engine), scenario)


def test_a_dead_consumers_items_finish_exactly_once(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(20)) for _ in range(4)])
        taken = await h.queue.read("crashed", count=2, block_ms=50)  # taken, never acked
        for item in taken:
            await h.store.start_item(item.job_id, item.index)
        await asyncio.sleep(0.3)  # past the visibility timeout
        await h.drain("survivor")
        job = await h.store.read(job_id, "owner")
        assert job.status == JobStatus.SUCCEEDED and job.progress.done == 4
        assert await h.webhook_events() == [COMPLETED, 0, 1, 2, 3]  # one event per item
        assert [item.attempts for item in job.items if item.index < 2] == [2, 2]

    run(url, tmp_path, tiny_settings, EngineBackend(tiny_engine), scenario, visibility_ms=200)


class PausedBackend(EngineBackend):
    """A consumer that stalls: its first call waits for ``resume``, then answers black
    pixels (so its output, were it stored, would differ from its successor's)."""

    def __init__(self, engine: UpscaleEngine) -> None:
        super().__init__(engine)
        self.entered, self.resume = asyncio.Event(), asyncio.Event()

    async def upscale_image(self, job: TileJob) -> TileOutput:
        self.entered.set()
        await self.resume.wait()
        output = await super().upscale_image(job)
        assert output.pixels is not None
        return TileOutput(output.pixels * 0, None, output.tiles)


def test_a_stalled_consumer_cannot_overwrite_its_successor(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    """Fencing: each delivery holds a lease token; the consumer paused past the
    visibility timeout resumes after another delivery finished the item, and neither
    its output nor its outcome lands, nor does it ack the successor's entry."""
    paused = PausedBackend(tiny_engine)

    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(20))])
        stalled = asyncio.create_task(h.dispatcher.run_once("stalled", batch=1, block_ms=50))
        await asyncio.wait_for(paused.entered.wait(), 30)
        await asyncio.sleep(0.3)  # the stalled delivery is past the visibility timeout
        manifest = load_manifest(tiny_settings.extra_manifest)
        successor = Dispatcher(h.store, h.queue, h.objects, EngineBackend(tiny_engine),
                               manifest, tiny_settings, h.dispatcher.load_input)  # fmt: skip
        assert await successor.run_once("successor", batch=1, block_ms=50) == 1
        finished = await h.store.read(job_id, "owner")
        assert finished.status == JobStatus.SUCCEEDED and finished.items[0].attempts == 2
        kept = h.objects.get("outputs", output_key(job_id, 0, "png"))
        paused.resume.set()
        await asyncio.wait_for(stalled, 30)
        assert h.objects.get("outputs", output_key(job_id, 0, "png")) == kept
        after = await h.store.read(job_id, "owner")
        assert after.items[0] == finished.items[0] and after.progress == finished.progress
        assert await h.webhook_events() == [COMPLETED, 0]  # one item event, one completion
        assert await h.queue.pending_count() == 0
        assert h.dispatcher.metrics.leases_lost.get() == 1  # type: ignore[attr-defined]

    run(url, tmp_path, tiny_settings, paused, scenario, visibility_ms=200)


def test_existing_outputs_are_not_recomputed(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    backend = CountingBackend(tiny_engine)

    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(16)), encode(astronaut(16))])
        h.objects.put(
            "outputs", output_key(job_id, 0, "png"), b"written before a crash", "image/png"
        )
        await h.drain()
        assert (await h.store.read(job_id, "owner")).status == JobStatus.SUCCEEDED
        assert backend.calls == 1
        assert h.objects.get("outputs", output_key(job_id, 0, "png")) == b"written before a crash"

    run(url, tmp_path, tiny_settings, backend, scenario)


@pytest.mark.parametrize("point", ["output", "record"])
def test_a_dispatcher_killed_between_output_and_ack(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine, point: str
) -> None:
    """A real process dies by SIGKILL right after item 0's output is written (before its
    outcome is recorded), or after the outcome is recorded (before the ack); a successor
    finishes the job: item 0 is not computed again, its output is the one written before
    the kill, and each item has one outcome and one webhook event (one webhook-id)."""
    backend = CountingBackend(tiny_engine)

    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(20 + i)) for i in range(3)])
        assert tiny_settings.extra_manifest is not None
        doomed = subprocess.run(
            [sys.executable, "-m", "tests.utils.dispatcher_process", url,
             str(tmp_path / "objects"), str(tiny_settings.model_store),
             str(tiny_settings.extra_manifest), point],
            capture_output=True, timeout=90, check=False,
        )  # fmt: skip
        assert doomed.returncode == -signal.SIGKILL, doomed.stderr.decode()[-2000:]
        written = h.objects.get("outputs", output_key(job_id, 0, "png"))
        died = await h.store.read(job_id, "owner")
        assert died.progress.done == (1 if point == "record" else 0)
        assert await h.queue.pending_count() == 1  # item 0, delivered and never acked

        await asyncio.sleep(0.3)  # past the visibility timeout
        await h.drain("successor")
        job = await h.store.read(job_id, "owner")
        assert job.status == JobStatus.SUCCEEDED and job.progress.done == 3
        assert backend.calls == 2  # items 1 and 2 only
        assert h.objects.get("outputs", output_key(job_id, 0, "png")) == written
        assert await h.webhook_events() == [COMPLETED, 0, 1, 2]
        assert await h.queue.pending_count() == 0

    run(url, tmp_path, tiny_settings, backend, scenario, visibility_ms=200)


def test_transient_failures_retry_then_dead_letter(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    async def scenario(h: Harness) -> None:
        retried = await h.submit([encode(astronaut(16))])
        h.dispatcher.backend = CountingBackend(tiny_engine, failures=1)
        assert (await h.until(retried, JobStatus.SUCCEEDED)).status == JobStatus.SUCCEEDED
        # a lost replica reaches the dispatcher as the platform's 503: retried, not failed
        lost = await h.submit([encode(astronaut(16))])
        h.dispatcher.backend = CountingBackend(
            tiny_engine, failures=1, failure=ServiceUnavailable("the Upscaler is unavailable")
        )
        assert (await h.until(lost, JobStatus.SUCCEEDED)).status == JobStatus.SUCCEEDED

        doomed = await h.submit([encode(astronaut(16))])
        h.dispatcher.backend = CountingBackend(tiny_engine, failures=99)
        job = await h.until(doomed, JobStatus.FAILED)
        assert job.status == JobStatus.FAILED and "failed 3 deliveries" in (
            job.items[0].error or ""
        )
        (dead,) = await h.queue.dead_letters()
        assert dead["job"] == doomed and "unreachable" in dead["reason"]

    run(url, tmp_path, tiny_settings, EngineBackend(tiny_engine), scenario, visibility_ms=100)


def test_canceled_jobs_do_not_run(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    backend = CountingBackend(tiny_engine)

    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(16)) for _ in range(3)])
        await h.store.cancel(job_id, "owner")
        await h.drain()
        assert backend.calls == 0 and await h.queue.pending_count() == 0
        assert (await h.store.read(job_id, "owner")).status == JobStatus.CANCELED

    run(url, tmp_path, tiny_settings, backend, scenario)


class EndlessBackend(EngineBackend):
    """A model call that runs until it is cancelled (a long generation), and says so."""

    def __init__(self, engine: UpscaleEngine) -> None:
        super().__init__(engine)
        self.entered, self.cancelled = asyncio.Event(), False

    async def upscale_image(self, job: TileJob) -> TileOutput:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("not reached")


def test_canceling_a_job_stops_its_running_item(
    url: str, tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    """The dispatcher polls the job while an item runs: a cancel stops the item's model
    call (on a Diffusion replica, the denoising loop), nothing is stored, the entry is
    acked and the job stays canceled."""
    backend = EndlessBackend(tiny_engine)

    async def scenario(h: Harness) -> None:
        job_id = await h.submit([encode(astronaut(20))])
        running = asyncio.create_task(h.dispatcher.run_once("d1", batch=1, block_ms=50))
        await asyncio.wait_for(backend.entered.wait(), 30)
        await h.store.cancel(job_id, "owner")
        await asyncio.wait_for(running, 10)  # within a poll period or two
        assert backend.cancelled
        assert not h.objects.exists("outputs", output_key(job_id, 0, "png"))
        assert await h.queue.pending_count() == 0
        assert (await h.store.read(job_id, "owner")).status == JobStatus.CANCELED

    run(url, tmp_path, tiny_settings, backend, scenario)


async def run_loop_for(h: Harness, seconds: float) -> tuple[int, bool]:
    """Run the dispatch loop for a while; how often housekeeping ran, and if it stopped."""
    calls = 0

    async def housekeeping() -> None:
        nonlocal calls
        calls += 1

    loop = asyncio.create_task(
        h.dispatcher.run_forever("d1", housekeeping=housekeeping, housekeeping_every_s=0.1)
    )
    await asyncio.sleep(seconds)
    stopped = loop.done()
    loop.cancel()
    return calls, stopped


def test_the_loop_runs_housekeeping_and_survives_a_redis_outage(
    tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    async def redis_down(h: Harness) -> None:
        calls, stopped = await run_loop_for(h, 1.5)
        assert not stopped and calls == 0  # waits and retries; housekeeping needs the store

    async def redis_up(h: Harness) -> None:
        calls, stopped = await run_loop_for(h, 1.5)
        assert not stopped and calls >= 2  # at start, then again after the period

    run("redis://127.0.0.1:9/0", tmp_path, tiny_settings, EngineBackend(tiny_engine), redis_down)
    with redis_server(tmp_path / "redis") as url:
        run(url, tmp_path, tiny_settings, EngineBackend(tiny_engine), redis_up)
