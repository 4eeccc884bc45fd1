"""The dispatcher: takes items off the work queue and runs each item's pipeline.

A plain class (the Serve deployment only starts its loop). Per delivery: skip items of
canceled jobs and items already finished (a re-delivery after a crash); if the output
already exists under its deterministic key, record it instead of recomputing; else
load the input, run the pipeline through the model deployments, write the output,
record the outcome once (with its webhook events, sent by the outbox the loop also
pumps), ack. Bad input (undecodable, refused URL...) fails the item at
once with its message; other errors leave it pending for another delivery until it is
dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from services.config import Settings
from services.errors import PixserveError, ServiceUnavailable
from services.imaging.codec import CONTENT_TYPES, decode_image
from services.jobs.models import Item
from services.jobs.outbox import WebhookOutbox
from services.jobs.outputs import output_key
from services.jobs.queue import InFlight, WorkItem, WorkQueue
from services.jobs.store import JobExpired, JobNotFound, JobStore
from services.models.manifest import Manifest
from services.pipelines.presets import PlanBackend, PresetLibrary, job_plan
from services.pipelines.upscale import TileBackend, UpscaleOptions, image_limits, upscale_upload
from services.storage.base import ObjectStore
from services.telemetry.live import LiveStats
from services.telemetry.metrics import PlatformMetrics, in_memory, record_image
from services.telemetry.tracing import annotate, continued, current_trace_id, tracer

logger = logging.getLogger(__name__)
GAUGE_PERIOD_S = 5.0  # how often the loop records the queue gauges

InputLoader = Callable[[str], Awaitable[bytes]]


class Dispatcher:
    """Consumes the work queue; one instance per replica, ``consumer`` names it."""

    def __init__(
        self,
        store: JobStore,
        queue: WorkQueue,
        objects: ObjectStore,
        backend: TileBackend,
        manifest: Manifest,
        settings: Settings,
        load_input: InputLoader,
        outbox: WebhookOutbox | None = None,
        metrics: PlatformMetrics | None = None,
        live: LiveStats | None = None,
        presets: PresetLibrary | None = None,
        plans: PlanBackend | None = None,
    ) -> None:
        self.store, self.queue, self.objects = store, queue, objects
        self.backend, self.manifest, self.settings = backend, manifest, settings
        self.load_input = load_input
        self.outbox = outbox
        self.in_flight = InFlight(queue)
        self.metrics = metrics or in_memory()[0]
        self.live = live  # failed items go to the dashboard's recent errors
        self.presets, self.plans = presets or PresetLibrary({}, set()), plans
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
        with continued(record.traceparent), tracer.start_as_current_span("pixserve.job_item"):
            annotate(job_id=item.job_id, item=item.index, delivery=item.deliveries,
                     queue_wait_s=time.time() - item.enqueued_at)  # fmt: skip
            await self._process(item, params, record)

    async def _process(self, item: WorkItem, params: dict[str, Any], record: Item) -> None:
        if not await self.store.start_item(item.job_id, item.index):
            await self.queue.ack(item)  # canceled job, or finished by an earlier delivery
            return
        if item.deliveries == 1:
            self.metrics.queue_wait_seconds.observe(time.time() - item.enqueued_at)
        started = time.perf_counter()
        try:
            key, texts = await self._produce(item, params, record)
        except PixserveError as exc:
            annotate(error_class=exc.code)
            await self._finish(item, error=f"{exc.code}: {exc.message}")
            self.metrics.item_seconds.observe(time.perf_counter() - started,
                                              tags={"status": "failed"})  # fmt: skip
        except Exception as exc:  # transient: leave it pending for the next delivery
            annotate(error_class=type(exc).__name__)
            logger.exception("item %s/%s failed (delivery %d)", item.job_id, item.index,
                             item.deliveries)  # fmt: skip
            if await self.queue.exhausted(item):
                reason = f"{type(exc).__name__}: {exc}"
                await self._finish(item, error=f"failed {item.deliveries} deliveries: {reason}")
                await self.queue.dead_letter(item, reason)
            return
        else:
            await self._finish(item, output=key, texts=texts)
            self.metrics.item_seconds.observe(time.perf_counter() - started,
                                              tags={"status": "succeeded"})  # fmt: skip

    async def _produce(
        self, item: WorkItem, params: dict[str, Any], record: Item
    ) -> tuple[str, dict[str, Any] | None]:
        """The stored output's key, and the texts of a preset's caption steps."""
        if params.get("name") == "preset":
            return await self._produce_preset(item, params, record)
        fmt = str(params.get("format", "png"))
        key = output_key(item.job_id, item.index, fmt)
        if await asyncio.to_thread(self.objects.exists, "outputs", key):
            return key, None
        spec = self.manifest.get(str(params.get("model") or self.settings.default_model))
        options = UpscaleOptions(
            spec.name, params.get("scale"), params.get("width"), params.get("height"),
            fmt, int(params.get("quality", 90)),  # type: ignore[arg-type]
        )  # fmt: skip
        started = time.perf_counter()
        with tracer.start_as_current_span("pixserve.load_input"):
            data = await self.load_input(record.input)
        loaded = time.perf_counter()
        result = await upscale_upload(data, options, spec.scale, self.backend, self.settings)
        stored = time.perf_counter()
        with tracer.start_as_current_span("pixserve.store_output"):
            await asyncio.to_thread(
                self.objects.put, "outputs", key, result.data, CONTENT_TYPES[fmt]
            )
        steps = {"load_input": loaded - started, **result.step_seconds,
                 "store_output": time.perf_counter() - stored}  # fmt: skip
        record_image(self.metrics, spec.name, "job", result.input_size, result.output_size, steps)
        return key, None

    async def _produce_preset(
        self, item: WorkItem, params: dict[str, Any], record: Item
    ) -> tuple[str, dict[str, Any] | None]:
        """A preset item: decode here, run the plan on the model deployments, store the
        encoded image (or, for text-only presets, the texts as JSON); the texts also go
        on the item. A re-delivery finding the output stored re-reads the JSON's texts;
        an image preset's texts are then left out rather than computed twice."""
        plan = job_plan(params, self.presets, self.manifest, self.settings)
        fmt = plan.output.format if plan.output else "json"
        key = output_key(item.job_id, item.index, fmt)
        if await asyncio.to_thread(self.objects.exists, "outputs", key):
            if fmt != "json":
                return key, None
            stored: dict[str, Any] = json.loads(await asyncio.to_thread(
                self.objects.get, "outputs", key))  # fmt: skip
            return key, stored
        if self.plans is None:
            raise ServiceUnavailable("this dispatcher has no pipeline backend for presets")
        started = time.perf_counter()
        with tracer.start_as_current_span("pixserve.load_input"):
            data = await self.load_input(record.input)
        loaded = time.perf_counter()
        image = await asyncio.to_thread(decode_image, data, image_limits(self.settings))
        annotate(preset=plan.preset)
        result = await self.plans.run_plan(image, plan)
        ran = time.perf_counter()
        if result.image is None:
            body, content_type, size = json.dumps(result.texts).encode(), "application/json", (0, 0)
        else:
            body, content_type = result.image.data, result.image.content_type
            size = (result.image.width, result.image.height)
        with tracer.start_as_current_span("pixserve.store_output"):
            await asyncio.to_thread(self.objects.put, "outputs", key, body, content_type)
        steps = {"load_input": loaded - started, "pipeline": ran - loaded,
                 "store_output": time.perf_counter() - ran}  # fmt: skip
        record_image(self.metrics, f"preset:{plan.preset}", "job", (image.width, image.height),
                     size, steps)  # fmt: skip
        return key, result.texts or None

    async def _finish(
        self, item: WorkItem, output: str | None = None, error: str | None = None,
        texts: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        await self.store.finish_item(item.job_id, item.index, output, error, texts)  # + webhooks
        if error is not None and self.live is not None:
            code, _, message = error.partition(": ")
            self.live.error(source="job", job=item.job_id, item=item.index, code=code,
                            message=message[:500], trace_id=current_trace_id())  # fmt: skip
        await self.queue.ack(item)
        self.processed += 1
