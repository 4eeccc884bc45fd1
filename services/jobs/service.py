"""Submitting and reading jobs: inputs into storage, records into Redis, and envelopes
with fresh output URLs on every read."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from services.config import Settings
from services.errors import InvalidParameter, ModelNotReady
from services.jobs.models import TERMINAL_JOB, WEBHOOK_EVENTS, Item, Job, JobStatus
from services.jobs.outputs import IMAGES_AREA, image_key, output_type, preview_key
from services.jobs.progress import watchers_key
from services.jobs.queue import WorkQueue
from services.jobs.store import IdempotencyConflict, JobNotFound, JobStore, new_job_id
from services.models.manifest import Manifest
from services.net.fetch import SafeFetcher
from services.pipelines.presets import PresetLibrary
from services.pipelines.tasks import (
    GenerateTask,
    TaskContext,
    TaskPlan,
    TaskSpec,
    plan_task,
    with_seeds,
)
from services.platform import DeploymentReadiness, ReadinessCache
from services.storage.base import ObjectStore
from services.telemetry.tracing import current_traceparent
from services.webhooks.secrets import WebhookSecrets

UPLOAD_PREFIX = "upload:"  # item inputs the API stored from a multipart upload
UPLOADS_AREA = "jobs/"  # where those uploads live in the inputs area
S3_SCHEME = "s3://"
PROMPT_PREFIX = "prompt:"  # a generate job's items: their prompt is in the task
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    """A submission: the task and its inputs: uploaded bytes, https URLs and/or s3://
    keys in the inputs bucket (both in ``urls``); a generate job takes none."""

    spec: TaskSpec
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_events: list[str] = field(default_factory=lambda: ["completed"])

    def digest(self) -> str:
        """What makes two submissions "the same" for an Idempotency-Key: everything that
        changes the result or its delivery."""
        task = self.spec.model_dump(mode="json", exclude={"seeds"})
        digest = hashlib.sha256(json.dumps(task, sort_keys=True).encode())
        for name, data in self.uploads:
            digest.update(name.encode() + hashlib.sha256(data).digest())
        for url in self.urls:
            digest.update(url.encode())
        digest.update((self.webhook_url or "").encode())
        digest.update(json.dumps(sorted(self.webhook_events)).encode())
        return digest.hexdigest()

    @property
    def count(self) -> int:
        """How many items: one per input, or one per prompt of a generate job."""
        if isinstance(self.spec, GenerateTask):
            return len(self.spec.prompt_list())
        return len(self.uploads) + len(self.urls)


@runtime_checkable
class ReadinessSource(Protocol):
    """A backend that reports its deployments' state (the Serve backend does)."""

    async def readiness(self) -> dict[str, DeploymentReadiness]: ...


class WeightCheck:
    """Refuses a job whose models a deployment reports missing (503: a retry after
    ``pixserve models pull`` works). The deployments' state comes through a
    ``ReadinessCache`` (the one the Ingress's probes share): read once before the first
    check, then refreshed in the background, so a submission never waits on a busy
    deployment; unreadable state refuses nothing (the item reports it)."""

    def __init__(self, source: object, ttl_s: float = 2.0) -> None:
        self.cache = (
            ReadinessCache(source.readiness, ttl_s) if isinstance(source, ReadinessSource)
            else None
        )  # fmt: skip

    async def check(self, models: list[str]) -> None:
        states = await self.cache.get() if self.cache is not None else None
        missing = {name: why for state in (states or {}).values()
                   for name, why in state.missing.items()}  # fmt: skip
        for model in models:
            if model in missing:
                raise ModelNotReady(f"model: {model} is not loaded: {missing[model]}")


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
        secrets: WebhookSecrets,
        webhook_fetcher: SafeFetcher,
        presets: PresetLibrary | None = None,
        weights: WeightCheck | None = None,
    ) -> None:
        self.store, self.queue, self.objects = store, queue, objects
        self.fetcher, self.manifest, self.settings = fetcher, manifest, settings
        self.secrets, self.webhook_fetcher = secrets, webhook_fetcher
        self.presets = presets or PresetLibrary({}, set())
        self.weights = weights or WeightCheck(None)

    async def store_error(self, timeout_s: float = 1.0) -> str | None:
        """None when the job store answers a ping within ``timeout_s``, else why not
        (for the readiness probe: job routes answer 503 while it is down)."""
        try:
            await asyncio.wait_for(self.store.redis.ping(), timeout_s)
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except Exception as exc:  # unreachable, refused, loading: all mean not ready
            return f"unreachable ({type(exc).__name__})"
        return None

    async def submit(
        self, owner: str, request: JobRequest, idempotency_key: str | None,
        base_url: str | None = None, watch_s: int | None = None,
    ) -> Job:  # fmt: skip
        """Check everything that can be checked before any work (a 422 naming the field),
        store the inputs, record the job and enqueue its items; answers the envelope.
        ``watch_s``: a live viewer (the WebSocket channel) watches from the start, so its
        items render previews from their first report."""
        self._check_count(request)
        await self.weights.check(self.plan(request.spec).models)
        if isinstance(request.spec, GenerateTask):
            request = dataclasses.replace(request, spec=with_seeds(request.spec))
        await self._check_urls(request.urls)
        await self._check_webhook(owner, request)
        job_id = new_job_id()
        if idempotency_key:
            first = await self.store.remember_idempotency(
                owner, idempotency_key, request.digest(), job_id
            )
            if first != job_id:
                return await self._first_submission(first, owner, base_url)
        try:
            await self.queue.ensure_group()
            if watch_s is not None:
                await self.store.redis.set(watchers_key(job_id), 1, ex=watch_s)
            inputs, names = await self._inputs(job_id, request)
            await self.store.create(
                owner, request.spec.model_dump(mode="json"), inputs, request.webhook_url,
                job_id, request.webhook_events, names, current_traceparent(),
            )  # fmt: skip
        except BaseException:
            if idempotency_key:  # a retry with the key must not find a job that never was
                await self.store.forget_idempotency(owner, idempotency_key, job_id)
            raise
        return await self.view(job_id, owner, base_url)

    def plan(self, spec: TaskSpec) -> TaskPlan:
        """The task checked and resolved: a named 422 (or a 503 for a preset needing a
        deployment this platform lacks) when it cannot run."""
        return plan_task(spec, TaskContext(self.manifest, self.settings, self.presets))

    def _check_count(self, request: JobRequest) -> None:
        limit = self.settings.max_job_items
        if isinstance(request.spec, GenerateTask):
            if request.uploads or request.urls:
                raise InvalidParameter("images: a generate job takes prompts, not images")
            if not 1 <= request.count <= limit:
                raise InvalidParameter(f"prompts: a job takes 1 to {limit}; got {request.count}")
        elif not 1 <= request.count <= limit:
            raise InvalidParameter(f"images: a job takes 1 to {limit} inputs; got {request.count}")

    async def _check_webhook(self, owner: str, request: JobRequest) -> None:
        if not request.webhook_url:
            return
        self.webhook_fetcher.check_url(request.webhook_url)
        if await self.secrets.for_owner(owner) is None:
            raise InvalidParameter(
                "webhooks are off: jobs made without an API key are signed with the "
                "server's webhook_secret, and none is set"
            )
        unknown = set(request.webhook_events) - set(WEBHOOK_EVENTS)
        if unknown or not request.webhook_events:
            raise InvalidParameter(f"webhook_events are any of {', '.join(WEBHOOK_EVENTS)}; "
                                   f"not {', '.join(sorted(unknown)) or 'none'}")  # fmt: skip

    async def _inputs(self, job_id: str, request: JobRequest) -> tuple[list[str], list[str]]:
        """Each item's stored input and the name the client knows it by."""
        if isinstance(request.spec, GenerateTask):
            prompts = request.spec.prompt_list()
            return [f"{PROMPT_PREFIX}{i}" for i in range(len(prompts))], prompts
        inputs = await self._store_uploads(job_id, request.uploads) + list(request.urls)
        return inputs, [name for name, _ in request.uploads] + list(request.urls)

    async def _first_submission(
        self, job_id: str, owner: str, base_url: str | None, wait_s: float = 10.0
    ) -> Job:
        """The job a concurrent request with the same key is still storing: wait for it."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return await self.view(job_id, owner, base_url)
            except JobNotFound:
                if time.monotonic() > deadline:
                    raise IdempotencyConflict(
                        "a request with this Idempotency-Key is still being stored; retry"
                    ) from None
                await asyncio.sleep(0.05)

    async def view(self, job_id: str, owner: str, base_url: str | None = None) -> Job:
        """The job with output URLs minted now: presigned, or the API's own route made
        absolute with ``base_url`` (the request's; else the public_url setting)."""
        job = await self.store.read(job_id, owner)
        for item in job.items:
            await self._mint_url(job_id, item, base_url)
        if job.status == JobStatus.QUEUED and job.work_entry:
            job.queue_position = await self.queue.position(job.work_entry)
        return job

    async def wait(self, job_id: str, owner: str, timeout_s: float,
                   base_url: str | None = None) -> Job:  # fmt: skip
        """The job once it ended, or as it stands after ``timeout_s`` (``Prefer: wait``):
        woken by its event stream, not by polling."""
        deadline = time.monotonic() + timeout_s
        after = "0-0"
        while (left := deadline - time.monotonic()) > 0:
            head = await self.store.read(job_id, owner, with_items=False)
            if head.status in TERMINAL_JOB:
                break
            events = await self.store.events(job_id, after, block_ms=max(1, int(left * 1000)))
            after = events[-1][0] if events else after
        return await self.view(job_id, owner, base_url)

    async def view_item(self, job_id: str, index: int) -> Item:
        """One item with its output URL (for ``item`` webhooks; no ownership check)."""
        _, item = await self.store.item_context(job_id, index)
        await self._mint_url(job_id, item)
        return item

    async def _mint_url(self, job_id: str, item: Item, base_url: str | None = None) -> None:
        """The output's URL (and a mesh's preview's): presigned, else the API's route."""
        if not item.output_key:
            return
        base = (base_url or self.settings.public_url or "").rstrip("/")
        route = f"{base}/v1/jobs/{job_id}/items/{item.index}"
        item.output_url = await self._url(item.output_key) or f"{route}/output"
        if (preview := preview_key(item.output_key)) is not None:
            item.preview_url = await self._url(preview) or f"{route}/preview"

    async def _url(self, key: str) -> str | None:
        return await asyncio.to_thread(self.objects.url, "outputs", key,
                                       self.settings.presign_ttl_s)  # fmt: skip

    async def output(
        self, job_id: str, owner: str, index: int, preview: bool = False
    ) -> tuple[bytes, str]:
        """An item's stored output (or its mesh's PNG preview) and its media type."""
        job = await self.store.read(job_id, owner)
        if not 0 <= index < len(job.items) or not job.items[index].output_key:
            raise InvalidParameter(f"item {index} of job {job_id} has no output")
        key = str(job.items[index].output_key)
        if preview:
            render = preview_key(key)
            if render is None:
                raise InvalidParameter(f"item {index} of job {job_id} is not a mesh; only "
                                       "meshes have a preview")  # fmt: skip
            key = render
        return await asyncio.to_thread(self.objects.get, "outputs", key), output_type(key)

    async def publish_image(self, data: bytes, fmt: str, base_url: str | None = None) -> str:
        """Store an image for an answer that gives URLs (OpenAI's images routes): kept
        with the job outputs (same retention), reached by a presigned URL or the API's
        ``/v1/images/files/NAME`` route."""
        key = image_key(fmt)
        await asyncio.to_thread(self.objects.put, "outputs", key, data, output_type(key))
        url = await asyncio.to_thread(self.objects.url, "outputs", key,
                                      self.settings.presign_ttl_s)  # fmt: skip
        base = (base_url or self.settings.public_url or "").rstrip("/")
        return url or f"{base}/v1/images/files/{key.removeprefix(IMAGES_AREA)}"

    async def published_image(self, name: str) -> tuple[bytes, str]:
        """A published image by its name (its random key is the capability)."""
        key = IMAGES_AREA + name
        return await asyncio.to_thread(self.objects.get, "outputs", key), output_type(key)

    async def cancel(self, job_id: str, owner: str, base_url: str | None = None) -> Job:
        await self.store.cancel(job_id, owner)
        return await self.view(job_id, owner, base_url)

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
        """An item's input bytes: from storage for uploads and s3:// keys, through the
        SSRF guard for URLs."""
        if name.startswith(UPLOAD_PREFIX):
            key = name.removeprefix(UPLOAD_PREFIX)
            return await asyncio.to_thread(self.objects.get, "inputs", key)
        if name.startswith(S3_SCHEME):
            return await asyncio.to_thread(self.objects.get, "inputs", self._s3_key(name))
        data, _ = await self.fetcher.get(name)
        return data

    async def _check_urls(self, urls: list[str]) -> None:
        """https URLs must pass the fetcher's checks; s3:// keys must name existing
        objects in the inputs bucket outside the platform's own upload area."""
        keys = [self._s3_key(url) for url in urls if url.startswith(S3_SCHEME)]
        for url in urls:
            if not url.startswith(S3_SCHEME):
                self.fetcher.check_url(url)
        found = await asyncio.gather(
            *(asyncio.to_thread(self.objects.exists, "inputs", key) for key in keys)
        )
        missing = [key for key, exists in zip(keys, found, strict=True) if not exists]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InvalidParameter(f"{len(missing)} s3:// input(s) do not exist: {shown}")

    def _s3_key(self, uri: str) -> str:
        key = self.objects.input_key(uri)
        if key.startswith(UPLOADS_AREA):  # other tenants' uploads live there
            raise InvalidParameter(f"{uri}: keys under {UPLOADS_AREA} belong to the platform")
        return key

    async def _store_uploads(self, job_id: str, uploads: list[tuple[str, bytes]]) -> list[str]:
        names = []
        for index, (_, data) in enumerate(uploads):
            key = f"{UPLOADS_AREA}{job_id}/{index:05d}"
            await asyncio.to_thread(
                self.objects.put, "inputs", key, data, "application/octet-stream"
            )
            names.append(UPLOAD_PREFIX + key)
        return names
