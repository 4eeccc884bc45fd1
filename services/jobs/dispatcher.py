"""The dispatcher: takes items off the work queue and runs each item's pipeline.

A plain class (the Serve deployment only starts its loop). Per delivery: skip items of
canceled jobs and items already finished (a re-delivery after a crash); if the output
already exists under its deterministic key, record it instead of recomputing; else
load the input, run the item's task (services/pipelines/usecases.py, the same use
case a sync request runs) through the model deployments (stopped if the job is
canceled meanwhile), write the output, record the outcome once (with its webhook
events, sent by the outbox the loop also pumps), ack. Bad input (undecodable, refused
URL...: a 4xx error) fails the item at once with its message; other errors (a replica
or node lost, a 5xx) leave it pending for another delivery until it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from services.config import Settings
from services.errors import NotConfigured, PixserveError
from services.jobs.models import Item
from services.jobs.outbox import WebhookOutbox
from services.jobs.outputs import output_key, preview_key
from services.jobs.progress import CURRENT_ITEM, item_key
from services.jobs.queue import InFlight, WorkItem, WorkQueue
from services.jobs.store import JobExpired, JobNotFound, JobStore, LeaseLost
from services.models.catalog import adopt_added
from services.models.manifest import Manifest, ModelSpec
from services.pipelines.backend import TaskBackend
from services.pipelines.presets import PresetLibrary
from services.pipelines.tasks import (
    GenerateTask,
    TaskContext,
    TaskPlan,
    TaskSpec,
    parse_task,
    plan_task,
)
from services.pipelines.usecases import run_task
from services.storage.base import ObjectStore
from services.telemetry.live import LiveStats
from services.telemetry.logs import job_item
from services.telemetry.metrics import PlatformMetrics, in_memory, record_image
from services.telemetry.tracing import annotate, continued, current_trace_id, tracer

logger = logging.getLogger(__name__)
GAUGE_PERIOD_S = 5.0  # how often the loop records the queue gauges
CANCEL_POLL_S = 1.0  # how often a running item checks whether its job was canceled
PLAN_CACHE = 256  # jobs whose plans a replica keeps

InputLoader = Callable[[str], Awaitable[bytes]]
T = TypeVar("T")


class ItemCanceled(Exception):
    """The item's job was canceled while the item ran: its work was stopped."""


class Dispatcher:
    """Consumes the work queue; one instance per replica, ``consumer`` names it."""

    def __init__(
        self,
        store: JobStore,
        queue: WorkQueue,
        objects: ObjectStore,
        backend: TaskBackend,
        manifest: Manifest,
        settings: Settings,
        load_input: InputLoader,
        outbox: WebhookOutbox | None = None,
        metrics: PlatformMetrics | None = None,
        live: LiveStats | None = None,
        presets: PresetLibrary | None = None,
        route_added: Callable[[ModelSpec], None] | None = None,
    ) -> None:
        self.store, self.queue, self.objects = store, queue, objects
        self.route_added = route_added  # the backend's: requests for an added model
        self.backend, self.manifest, self.settings = backend, manifest, settings
        self.load_input = load_input
        self.outbox = outbox
        self.in_flight = InFlight(queue)
        self.metrics = metrics or in_memory()[0]
        self.live = live  # failed items go to the dashboard's recent errors
        self.presets = presets or PresetLibrary({}, set())
        self.plans: dict[str, TaskPlan] = {}  # by job id, oldest first
        self.processed = 0

    async def run_forever(
        self,
        consumer: str,
        housekeeping: Callable[[], Awaitable[None]] | None = None,
        housekeeping_every_s: float = 3600.0,
    ) -> None:
        """Loop until cancelled; a Redis outage pauses the loop (with backoff), never ends
        it. ``housekeeping`` (the retention pass) runs at start and then periodically;
        the webhook outbox is pumped between reads."""
        pause = 0.5
        next_housekeeping = next_gauges = 0.0
        while True:
            try:
                await self.queue.ensure_group()
                if self.outbox is not None:
                    await self.outbox.queue.ensure_group()
                while True:
                    if housekeeping is not None and time.monotonic() >= next_housekeeping:
                        next_housekeeping = time.monotonic() + housekeeping_every_s
                        await housekeeping()
                    await self.fill(consumer)
                    if self.outbox is not None:
                        await self.outbox.pump(consumer)
                    if time.monotonic() >= next_gauges:
                        next_gauges = time.monotonic() + GAUGE_PERIOD_S
                        await self.record_queue_gauges()
                    pause = 0.5
            except RedisError as exc:
                logger.warning("job store unreachable (%s); retrying in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def fill(self, consumer: str) -> None:
        """Keep up to ``dispatcher_concurrency`` items in flight, as many as the queue
        holds: in-flight work (the model deployments' ongoing requests, which drive their
        autoscaling) follows the queue depth, and an empty queue sends them nothing."""
        await self.in_flight.heartbeat(consumer)
        room = self.settings.dispatcher_concurrency - len(self.in_flight)
        items = []
        if room > 0:
            wait_ms = 50 if len(self.in_flight) else 1000
            items = await self.queue.read(consumer, count=room, block_ms=wait_ms)
            for item in items:
                if item.entry_id not in self.in_flight:  # else: ours, re-claimed
                    self.in_flight.start(item.entry_id, self.process(item))
        if not items:
            await self.in_flight.wait_any(timeout_s=1.0)

    async def record_queue_gauges(self) -> None:
        """Queue depth, the oldest item's age and the dead-letter counts, for dashboards."""
        self.metrics.queue_depth.set(await self.queue.backlog())
        self.metrics.queue_oldest_age.set(await self.queue.oldest_age_s())
        queues = [self.queue] + ([self.outbox.queue] if self.outbox is not None else [])
        for queue in queues:
            count = await queue.dead_letter_count()
            self.metrics.dead_letters.set(count, tags={"stream": queue.dead_letter_stream})

    async def run_once(self, consumer: str, batch: int = 8, block_ms: int = 1000) -> int:
        """Read up to ``batch`` items and process them concurrently; how many were read."""
        items = await self.queue.read(consumer, count=batch, block_ms=block_ms)
        await asyncio.gather(*(self.process(item) for item in items))
        return len(items)

    async def process(self, item: WorkItem) -> None:
        """One delivery, as one ``pixserve.job_item`` span continuing the submission's
        trace: starting the item, its work, and recording the outcome."""
        try:
            params, record = await self.store.item_context(item.job_id, item.index)
        except (JobNotFound, JobExpired):
            await self.queue.ack(item)  # the job is gone: nothing to do
            return
        with (
            continued(record.traceparent),
            tracer.start_as_current_span("pixserve.job_item"),
            job_item(item.job_id, item.index),
        ):
            annotate(job_id=item.job_id, item=item.index, delivery=item.deliveries,
                     queue_wait_s=time.time() - item.enqueued_at)  # fmt: skip
            await self._process(item, params, record)

    async def _process(self, item: WorkItem, params: dict[str, Any], record: Item) -> None:
        try:
            await self._run(item, params, record, secrets.token_hex(8))
        except LeaseLost:  # stalled past the visibility timeout: the item is another's
            logger.warning("item %s/%s: lease lost to a later delivery; outcome dropped",
                           item.job_id, item.index)  # fmt: skip
            self.metrics.leases_lost.inc()

    async def _run(self, item: WorkItem, params: dict[str, Any], record: Item, lease: str) -> None:
        """Start the item under this delivery's ``lease``, produce its output, record the
        outcome (only while the lease holds) and ack."""
        if not await self.store.start_item(item.job_id, item.index, lease):
            await self.queue.ack(item)  # canceled job, or finished by an earlier delivery
            return
        if item.deliveries == 1:
            self.metrics.queue_wait_seconds.observe(time.time() - item.enqueued_at)
        started = time.perf_counter()
        try:
            key, texts = await self._produce(item, params, record, lease)
        except LeaseLost:
            raise  # not the item's failure: another delivery holds it
        except ItemCanceled:
            logger.info("item %s/%s stopped: its job was canceled", item.job_id, item.index)
            await self.queue.ack(item)
            return
        except PixserveError as exc:
            if exc.status >= 500 and not isinstance(exc, NotConfigured):  # a replica lost,
                # a node gone: retry (what is not configured stays so)
                await self._retry_later(item, lease, exc.code, f"{exc.code}: {exc.message}")
                return
            annotate(error_class=exc.code)
            logger.info("item failed: %s", exc.code, extra={"error_class": exc.code})
            await self._finish(item, lease, error=f"{exc.code}: {exc.message}", status=exc.status)
            self.metrics.item_seconds.observe(time.perf_counter() - started,
                                              tags={"status": "failed"})  # fmt: skip
        except Exception as exc:  # transient: leave it pending for the next delivery
            name = type(exc).__name__
            await self._retry_later(item, lease, name, f"{name}: {exc}")
            return
        else:
            await self._finish(item, lease, output=key, texts=texts)
            self.metrics.item_seconds.observe(time.perf_counter() - started,
                                              tags={"status": "succeeded"})  # fmt: skip

    async def _retry_later(self, item: WorkItem, lease: str, error_class: str, reason: str) -> None:
        """A failure that is not the input's: the item stays pending for another delivery
        (after the visibility timeout), or fails and is dead-lettered on its last one."""
        annotate(error_class=error_class)
        logger.exception("item %s/%s failed (delivery %d)", item.job_id, item.index,
                         item.deliveries, extra={"error_class": error_class})  # fmt: skip
        if await self.queue.exhausted(item):
            error = f"failed {item.deliveries} deliveries: {reason}"
            await self._finish(item, lease, error=error, status=500)
            await self.queue.dead_letter(item, reason)

    async def _produce(
        self, item: WorkItem, stored: dict[str, Any], record: Item, lease: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Run the item's task and store its output; the output's key and the texts the
        task produced. A re-delivery finding the output stored keeps it (a JSON output's
        texts are read back; an image's texts are then left out rather than recomputed).
        A delivery whose lease was taken over stores nothing (``LeaseLost``)."""
        plan = await self._planned(item.job_id, stored)
        key = output_key(item.job_id, item.index, plan.output_format)
        if await asyncio.to_thread(self.objects.exists, "outputs", key):
            if plan.output_format != "json":
                return key, None
            return key, json.loads(await asyncio.to_thread(self.objects.get, "outputs", key))
        started = time.perf_counter()
        data = None
        if not isinstance(plan.spec, GenerateTask):
            with tracer.start_as_current_span("pixserve.load_input"):
                data = await self.load_input(record.input)
        else:  # the item's own prompt and recorded seed
            plan = self.plan_of(plan.spec.for_item(item.index))
        loaded = time.perf_counter()
        CURRENT_ITEM.set(item_key(item.job_id, item.index))  # the replica reports progress
        result = await self._unless_canceled(
            item.job_id, run_task(plan, data, self.backend, self.settings)
        )
        ran = time.perf_counter()
        if not await self.store.holds_lease(item.job_id, item.index, lease):
            raise LeaseLost(f"item {item.index} of job {item.job_id} is held by a later delivery")
        with tracer.start_as_current_span("pixserve.store_output"):
            if result.preview is not None and (preview := preview_key(key)) is not None:
                # before the output: a re-delivery that finds the output finds this too
                await asyncio.to_thread(self.objects.put, "outputs", preview, result.preview,
                                        "image/png")  # fmt: skip
            await asyncio.to_thread(self.objects.put, "outputs", key, result.data,
                                    result.content_type)  # fmt: skip
        steps = {"load_input": loaded - started, **result.step_seconds,
                 "store_output": time.perf_counter() - ran}  # fmt: skip
        record_image(self.metrics, result.metric, "job", result.input_size, result.output_size,
                     steps)  # fmt: skip
        return key, result.texts

    async def _unless_canceled(self, job_id: str, work: Awaitable[T]) -> T:
        """Await ``work``, checking every ``CANCEL_POLL_S`` whether the job was canceled;
        if so the work is cancelled, which cancels its deployment calls (a generation
        stops its denoising loop), and ``ItemCanceled`` is raised."""
        running = asyncio.ensure_future(work)
        try:
            while not (await asyncio.wait({running}, timeout=CANCEL_POLL_S))[0]:
                if await self.store.is_canceled(job_id):
                    running.cancel()
                    raise ItemCanceled(job_id)
            return running.result()
        finally:
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running

    async def _planned(self, job_id: str, stored: dict[str, Any]) -> TaskPlan:
        """The job's plan; one naming a model added at run time since this replica last
        looked (another process took the upload) adopts it first."""
        try:
            return self._plan(job_id, stored)
        except PixserveError:
            if self.route_added is None or not await adopt_added(
                self.store.redis, self.manifest, self.settings, self.route_added
            ):
                raise
        return self._plan(job_id, stored)

    def _plan(self, job_id: str, stored: dict[str, Any]) -> TaskPlan:
        """The job's plan, compiled once per job on this replica (it was checked at
        submit; a failure now is the platform's, e.g. a model since removed)."""
        plan = self.plans.get(job_id)
        if plan is None:
            plan = self.plans[job_id] = self.plan_of(parse_task(stored))
            while len(self.plans) > PLAN_CACHE:
                self.plans.pop(next(iter(self.plans)))
        return plan

    def plan_of(self, spec: TaskSpec) -> TaskPlan:
        return plan_task(spec, TaskContext(self.manifest, self.settings, self.presets))

    async def _finish(
        self, item: WorkItem, lease: str, output: str | None = None, error: str | None = None,
        texts: dict[str, Any] | None = None, status: int | None = None,
    ) -> None:  # fmt: skip
        """Record the outcome (and its webhook events) while the lease holds, then ack;
        ``LeaseLost`` leaves the entry to its holder, unacked. A failure goes to the
        dashboard with its ``status``: the input's (4xx) apart from the platform's."""
        await self.store.finish_item(item.job_id, item.index, output, error, texts, lease)
        if error is not None and self.live is not None:
            code, _, message = error.partition(": ")
            self.live.error(source="job", job=item.job_id, item=item.index, code=code,
                            status=status, message=message[:500],
                            trace_id=current_trace_id())  # fmt: skip
        await self.queue.ack(item)
        self.processed += 1
