"""The webhook outbox sender: turns outbox entries (recorded by the job store in the
same step as each outcome) into signed deliveries, acked only once delivered.

At-least-once like the work queue: a sender that dies mid-delivery leaves its entries
pending and another re-claims them after the visibility timeout; a live sender keeps
its slow deliveries (retries with backoff) from being re-claimed with a heartbeat.
Deliveries that exhaust their retries go to the outbox's dead-letter stream. Payloads
are Standard Webhooks' ``{type, timestamp, data}`` with the API's envelope as data,
output URLs included; the message id is derived from the event, so a receiver can
de-duplicate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from services.errors import PixserveError
from services.jobs.models import iso
from services.jobs.queue import InFlight, WorkItem, WorkQueue
from services.jobs.service import JobService
from services.jobs.store import COMPLETED, STARTED
from services.telemetry.metrics import PlatformMetrics, in_memory
from services.webhooks.delivery import DeliveryReport, WebhookSender

logger = logging.getLogger(__name__)


class WebhookOutbox:
    """Pumped by the dispatcher loop: starts deliveries in the background, up to
    ``max_in_flight`` at once, so a slow receiver never holds up the work queue."""

    def __init__(
        self,
        jobs: JobService,
        sender: WebhookSender,
        queue: WorkQueue,
        max_in_flight: int = 64,
        metrics: PlatformMetrics | None = None,
    ) -> None:
        self.jobs, self.sender, self.queue = jobs, sender, queue
        self.metrics = metrics or in_memory()[0]
        self.max_in_flight = max_in_flight
        self.in_flight = InFlight(queue)
        self.reports: deque[DeliveryReport] = deque(maxlen=1000)  # recent outcomes

    async def pump(self, consumer: str) -> None:
        """Heartbeat the deliveries in flight, then start new ones without waiting."""
        await self.in_flight.heartbeat(consumer)
        room = self.max_in_flight - len(self.in_flight)
        if room <= 0:
            return
        for entry in await self.queue.read(consumer, count=room, block_ms=None):
            if entry.entry_id not in self.in_flight:  # else: our own, re-claimed
                self.in_flight.start(entry.entry_id, self._deliver(entry))

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests, shutdown)."""
        await self.in_flight.drain()

    async def _deliver(self, entry: WorkItem) -> None:
        try:
            event = await self._event(entry)
        except PixserveError as exc:  # the job is gone or expired: nothing to tell
            logger.info("webhook %s/%s dropped: %s", entry.job_id, entry.index, exc.message)
            await self.queue.ack(entry)
            return
        except Exception:  # Redis or storage trouble: leave it pending for a re-claim
            logger.exception("webhook %s/%s not prepared", entry.job_id, entry.index)
            return
        if event is None:
            await self.queue.ack(entry)
            return
        url, message_id, payload, secret = event
        report = await self.sender.deliver(url, message_id, payload, secret)
        self.reports.append(report)
        outcome = "delivered" if report.delivered else "failed"
        self.metrics.webhooks.inc(tags={"outcome": outcome})
        if report.delivered:
            await self.queue.ack(entry)
        else:
            reason = f"not delivered after {report.attempts} attempts: {report.statuses}"
            await self.queue.dead_letter(entry, reason)

    async def _event(self, entry: WorkItem) -> tuple[str, str, dict[str, Any], str] | None:
        """(url, message id, payload, secret), or None when nothing can be signed."""
        job_id, index = entry.job_id, entry.index
        owner = await self.jobs.store.owner_of(job_id)
        head = await self.jobs.store.read(job_id, owner, with_items=False)
        secret = await self.jobs.secrets.for_owner(owner)
        if not head.webhook_url or secret is None:
            logger.warning("job %s: no webhook URL or secret for %s; not sent", job_id, owner)
            return None
        if index in (COMPLETED, STARTED):
            job = (await self.jobs.view(job_id, owner)).public()
            kind, at = ("completed", job.finished_at) if index == COMPLETED else (
                "started", job.started_at)  # fmt: skip
            payload = envelope(f"job.{kind}", at, job.model_dump(mode="json"))
            return head.webhook_url, f"{job_id}.{kind}", payload, secret
        item = (await self.jobs.view_item(job_id, index)).public()
        data = {"job_id": job_id, "item": item.model_dump(mode="json"),
                "progress": head.progress.model_dump()}  # fmt: skip
        payload = envelope("job.item", item.finished_at, data)
        return head.webhook_url, f"{job_id}.item.{index}", payload, secret


def envelope(kind: str, at: float | None, data: dict[str, Any]) -> dict[str, Any]:
    """Standard Webhooks' payload shape: ``{type, timestamp, data}``, the timestamp
    (ISO 8601) when the event happened, not when this delivery was made."""
    return {"type": kind, "timestamp": iso(at if at is not None else time.time()), "data": data}
