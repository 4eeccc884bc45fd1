"""The operator's view of the platform: what ``/dashboard`` shows and the actions it offers.

Reads only what the platform already keeps: Serve's controller (deployments, through
the backend), the replicas' snapshots and the per-minute numbers in Redis (see
``services.telemetry.live``), the job records and the work and webhook queues. So the
dashboard needs no Prometheus or Grafana, and stays true across ingress replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel

from services.errors import InvalidParameter, PixserveError
from services.jobs.models import Job, JobStatus
from services.jobs.queue import WorkQueue
from services.jobs.service import JobService
from services.jobs.store import JobNotFound
from services.platform import DeploymentView, PlatformBackend
from services.telemetry.live import LiveReader, Minute, latency_by_route

logger = logging.getLogger(__name__)
DeadStream = Literal["work", "webhooks"]


class JobRow(BaseModel):
    """A job in the operator's table (no items: one small read per job)."""

    owner: str
    job: Job


class JobDetail(BaseModel):
    """One job for the operator: its owner, items with trace ids, timings."""

    owner: str
    job: Job
    trace_ids: dict[int, str]


class Overview(BaseModel):
    """Everything the dashboard's panels plot, in one answer."""

    generated_at: float
    deployments: list[DeploymentView]
    deployments_error: str | None = None
    replicas: list[dict[str, Any]]
    queue: dict[str, float]
    series: list[dict[str, float | None]]
    latency: list[dict[str, Any]]
    cost: dict[str, Any]
    errors: list[dict[str, Any]]


class Console:
    """Assembles the overview and carries out the operator's actions."""

    def __init__(
        self,
        jobs: JobService,
        outbox: WorkQueue,
        live: LiveReader,
        backend: PlatformBackend | None,
        gpu_hour_price_usd: float,
    ) -> None:
        self.jobs, self.outbox, self.live, self.backend = jobs, outbox, live, backend
        self.gpu_hour_price_usd = gpu_hour_price_usd

    async def overview(self, minutes: int = 60) -> Overview:
        app, deployments, deployments_error = await self._deployments()
        history = await self.live.minutes(minutes)
        replicas = [r for r in await self.live.replicas() if app is None or r.get("app") == app]
        queue = self.jobs.queue
        return Overview(
            generated_at=time.time(),
            deployments=deployments,
            deployments_error=deployments_error,
            replicas=replicas,
            queue={
                "depth": await queue.backlog(),
                "oldest_age_s": await queue.oldest_age_s(),
                "dead_letters": await queue.dead_letter_count(),
                "webhook_dead_letters": await self.outbox.dead_letter_count(),
            },
            series=[_series_point(minute) for minute in history],
            latency=latency_by_route(history),
            cost=self._cost(history),
            errors=await self.live.errors(50),
        )

    async def list_jobs(
        self, status: JobStatus | None, cursor: float | None, limit: int
    ) -> tuple[list[JobRow], float | None]:
        rows, next_cursor = await self.jobs.store.list_all(status, cursor, limit)
        return [JobRow(owner=owner, job=job) for owner, job in rows], next_cursor

    async def job(self, job_id: str) -> JobDetail:
        owner, job = await self.jobs.store.read_any(job_id)
        traces = {
            item.index: item.traceparent.split("-")[1]
            for item in job.items
            if item.traceparent and item.traceparent.count("-") == 3
        }
        return JobDetail(owner=owner, job=job, trace_ids=traces)

    async def dead_letters(self) -> dict[str, list[dict[str, str]]]:
        return {
            "work": await self.jobs.queue.dead_letters(100),
            "webhooks": await self.outbox.dead_letters(100),
        }

    async def retry(self, stream: DeadStream, entry_id: str) -> dict[str, str]:
        """Send a dead-lettered item (or webhook event) through again."""
        queue = self.jobs.queue if stream == "work" else self.outbox
        fields = await queue.dead_letter_entry(entry_id)
        if fields is None:
            raise DeadLetterNotFound(f"no {stream} dead letter {entry_id}")
        if stream == "webhooks":
            await queue.redeliver(entry_id, fields)
            return {"job": fields["job"], "outcome": "redelivered"}
        outcome = await self.jobs.store.requeue(fields["job"], int(fields["item"]), entry_id)
        if outcome == "missing":
            raise JobNotFound(f"job {fields['job']} no longer exists")
        if outcome in ("canceled", "expired"):
            raise InvalidParameter(f"job {fields['job']} is {outcome}; its items do not run")
        return {"job": fields["job"], "outcome": "requeued", "job_status": outcome}

    async def _deployments(self) -> tuple[str | None, list[DeploymentView], str | None]:
        """(this app's name, its deployments, why they are unknown); replicas of other
        apps sharing the Redis are not shown when the app is known."""
        if self.backend is None:
            return None, [], "the model deployments are not connected"
        try:
            app, deployments = await self.backend.deployments()
            return app, deployments, None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a Ray error or a timeout from the controller call
            logger.warning("deployment details unavailable: %r", exc)
            return None, [], f"Serve's controller did not answer: {type(exc).__name__}"

    def _cost(self, history: list[Minute]) -> dict[str, Any]:
        """Images, compute and estimated GPU cost over the window, per model and in all."""
        models = sorted(
            set().union(*(m.tag_values("c", "pixserve_images_total", "model") for m in history))
        )
        rows: list[dict[str, Any]] = []
        for model in models:
            images = sum(m.total("c", "pixserve_images_total", model=model) for m in history)
            usd = sum(m.total("c", "pixserve_gpu_cost_usd_total", model=model) for m in history)
            seconds = sum(m.total("c", "pixserve_compute_seconds_total", model=model)
                          for m in history)  # fmt: skip
            totals = {"images": images, "gpu_cost_usd": usd, "compute_s": seconds}
            rows.append({"model": model, **totals, **_per_image(images, usd, seconds)})
        images = sum(float(row["images"] or 0) for row in rows)
        usd = sum(float(row["gpu_cost_usd"] or 0) for row in rows)
        seconds = sum(float(row["compute_s"] or 0) for row in rows)
        return {
            "gpu_hour_price_usd": self.gpu_hour_price_usd,
            "images": images,
            "gpu_cost_usd": usd,
            "compute_s": seconds,
            **_per_image(images, usd, seconds),
            "by_model": rows,
        }


class DeadLetterNotFound(PixserveError):
    code = "dead_letter_not_found"
    status = 404


def _per_image(images: float, usd: float, seconds: float) -> dict[str, float | None]:
    return {
        "cost_per_image_usd": usd / images if images else None,
        "images_per_usd": images / usd if usd else None,
        "compute_s_per_image": seconds / images if images else None,
    }


def _series_point(minute: Minute) -> dict[str, float | None]:
    return {
        "at": minute.at,
        "images": minute.total("c", "pixserve_images_total"),
        "items_succeeded": minute.total("h", "pixserve_job_item_seconds", status="succeeded"),
        "items_failed": minute.total("h", "pixserve_job_item_seconds", status="failed"),
        "requests": minute.total("c", "pixserve_requests_total"),
        "queue_depth": minute.gauge("pixserve_queue_depth"),
        "oldest_age_s": minute.gauge("pixserve_queue_oldest_age_seconds"),
    }
