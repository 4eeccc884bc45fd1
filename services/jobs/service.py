"""Submitting and reading jobs: inputs into storage, records into Redis, and envelopes
with fresh output URLs on every read."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

from services.config import Settings
from services.errors import InvalidParameter
from services.jobs.models import Job, JobStatus
from services.jobs.queue import WorkQueue
from services.jobs.store import JobStore, new_job_id
from services.models.manifest import Manifest
from services.net.fetch import SafeFetcher
from services.storage.base import ObjectStore

UPLOAD_PREFIX = "upload:"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    """A submission: pipeline parameters and inputs (uploaded bytes and/or https URLs)."""

    pipeline: dict[str, object]
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_events: list[str] = field(default_factory=lambda: ["completed"])

    def digest(self) -> str:
        """What makes two submissions "the same" for an Idempotency-Key."""
        digest = hashlib.sha256(repr(sorted(self.pipeline.items())).encode())
        for name, data in self.uploads:
            digest.update(name.encode() + hashlib.sha256(data).digest())
        for url in self.urls:
            digest.update(url.encode())
        digest.update((self.webhook_url or "").encode())
        return digest.hexdigest()


class JobService:
    """The job operations the API offers, over the store, queue and object storage."""

    def __init__(
        self,
        store: JobStore,
        queue: WorkQueue,
        objects: ObjectStore,
        fetcher: SafeFetcher,
        manifest: Manifest,
        settings: Settings,
    ) -> None:
        self.store, self.queue, self.objects = store, queue, objects
        self.fetcher, self.manifest, self.settings = fetcher, manifest, settings

    async def submit(self, owner: str, request: JobRequest, idempotency_key: str | None) -> Job:
        count = len(request.uploads) + len(request.urls)
        if not 1 <= count <= self.settings.max_job_items:
            raise InvalidParameter(
                f"a job takes 1 to {self.settings.max_job_items} inputs; got {count}"
            )
        self.manifest.get(str(request.pipeline.get("model") or self.settings.default_model))
        for url in request.urls:
            self.fetcher.check_url(url)
        if request.webhook_url:
            self.fetcher.check_url(request.webhook_url)
            if self.settings.webhook_secret is None:
                raise InvalidParameter("webhooks are off: the server has no webhook_secret")
            unknown = set(request.webhook_events) - {"item", "completed"}
            if unknown or not request.webhook_events:
                raise InvalidParameter(f"webhook_events are 'item' and/or 'completed': {unknown}")
        job_id = new_job_id()
        if idempotency_key:
            first = await self.store.remember_idempotency(
                owner, idempotency_key, request.digest(), job_id
            )
            if first != job_id:
                return await self.view(first, owner)
        await self.queue.ensure_group()
        inputs = await self._store_uploads(job_id, request.uploads) + list(request.urls)
        await self.store.create(
            owner, request.pipeline, inputs, request.webhook_url, job_id, request.webhook_events
        )
        return await self.view(job_id, owner)

    async def view(self, job_id: str, owner: str) -> Job:
        """The envelope with output URLs minted now (presigned, or the API's own)."""
        job = await self.store.read(job_id, owner)
        for item in job.items:
            if item.output_key:
                url = await asyncio.to_thread(
                    self.objects.url, "outputs", item.output_key, self.settings.presign_ttl_s
                )
                item.output_url = url or f"/v1/jobs/{job_id}/items/{item.index}/output"
        return job

    async def output(self, job_id: str, owner: str, index: int) -> bytes:
        job = await self.store.read(job_id, owner)
        if not 0 <= index < len(job.items) or not job.items[index].output_key:
            raise InvalidParameter(f"item {index} of job {job_id} has no output")
        key = str(job.items[index].output_key)
        return await asyncio.to_thread(self.objects.get, "outputs", key)

    async def cancel(self, job_id: str, owner: str) -> Job:
        await self.store.cancel(job_id, owner)
        return await self.view(job_id, owner)

    async def list_jobs(
        self, owner: str, status: JobStatus | None, cursor: float | None, limit: int
    ) -> tuple[list[Job], float | None]:
        return await self.store.list_jobs(owner, status, cursor, limit)

    async def apply_retention(self) -> None:
        """Expire old inputs/outputs: the S3 lifecycle rules, or a file:// janitor pass.
        A failure (e.g. no permission to set lifecycle rules) is logged, not fatal."""
        try:
            await asyncio.to_thread(self.objects.apply_retention, self.settings.retention_hours)
        except Exception:
            logger.exception("could not apply the retention of %d h", self.settings.retention_hours)

    async def load_input(self, name: str) -> bytes:
        """An item's input bytes: from storage for uploads, through the SSRF guard for URLs."""
        if name.startswith(UPLOAD_PREFIX):
            key = name.removeprefix(UPLOAD_PREFIX)
            return await asyncio.to_thread(self.objects.get, "inputs", key)
        data, _ = await self.fetcher.get(name)
        return data

    async def _store_uploads(self, job_id: str, uploads: list[tuple[str, bytes]]) -> list[str]:
        names = []
        for index, (_, data) in enumerate(uploads):
            key = f"jobs/{job_id}/{index:05d}"
            await asyncio.to_thread(
                self.objects.put, "inputs", key, data, "application/octet-stream"
            )
            names.append(UPLOAD_PREFIX + key)
        return names
