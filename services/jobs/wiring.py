"""Build the job service and dispatcher from settings (shared by ingress and dispatcher)."""

from __future__ import annotations

from services.auth.guard import connect_redis
from services.config import Settings
from services.jobs.dispatcher import Dispatcher
from services.jobs.notify import JobNotifier
from services.jobs.queue import WorkQueue
from services.jobs.service import JobService
from services.jobs.store import JobStore
from services.models.manifest import load_manifest
from services.net.fetch import SafeFetcher
from services.pipelines.upscale import TileBackend
from services.storage.factory import open_store
from services.webhooks.delivery import WebhookSender


def build_job_service(settings: Settings) -> JobService:
    redis = connect_redis(settings)
    queue = WorkQueue(redis, int(settings.visibility_timeout_s * 1000), settings.max_deliveries)
    return JobService(
        JobStore(redis, settings.retention_hours * 3600),
        queue,
        open_store(settings),
        SafeFetcher(max_bytes=settings.max_upload_bytes),
        load_manifest(settings.extra_manifest),
        settings,
    )


def build_dispatcher(settings: Settings, backend: TileBackend) -> tuple[Dispatcher, JobService]:
    """The dispatcher and the job service it shares storage and Redis with."""
    service = build_job_service(settings)
    notify = None
    if settings.webhook_secret is not None:
        sender = WebhookSender(service.fetcher, settings.webhook_secret.get_secret_value())
        notify = JobNotifier(service.store, sender)
    dispatcher = Dispatcher(
        service.store, service.queue, service.objects, backend, service.manifest, settings,
        service.load_input, notify,
    )  # fmt: skip
    return dispatcher, service
