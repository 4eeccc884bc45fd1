"""Turn finished items into webhook deliveries (``item`` and ``completed`` events),
sent in the background so a slow receiver never holds up the dispatcher."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from services.jobs.models import TERMINAL_JOB
from services.jobs.store import JobStore
from services.webhooks.delivery import DeliveryReport, WebhookSender


class JobNotifier:
    """The dispatcher's ``notify``: one stable message id per event."""

    def __init__(self, store: JobStore, sender: WebhookSender) -> None:
        self.store = store
        self.sender = sender
        self.tasks: set[asyncio.Task[DeliveryReport]] = set()
        self.reports: deque[DeliveryReport] = deque(maxlen=1000)  # recent outcomes

    async def __call__(self, job_id: str, index: int, job_status: str) -> None:
        job = await self.store.read(job_id, await self.store.owner_of(job_id))
        if not job.webhook_url:
            return
        if "item" in job.webhook_events:
            item = job.items[index]
            payload = {"type": "job.item", "job_id": job_id, "item": item.model_dump(mode="json"),
                       "progress": job.progress.model_dump()}  # fmt: skip
            self._send(job.webhook_url, f"{job_id}.item.{index}", payload)
        if "completed" in job.webhook_events and job_status in TERMINAL_JOB:
            payload = {"type": "job.completed", "job": job.model_dump(mode="json")}
            self._send(job.webhook_url, f"{job_id}.completed", payload)

    def _send(self, url: str, message_id: str, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.sender.deliver(url, message_id, payload))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[DeliveryReport]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.reports.append(task.result())

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests, shutdown); outcomes land in ``reports``."""
        await asyncio.gather(*self.tasks)
