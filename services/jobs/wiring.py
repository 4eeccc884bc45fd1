"""Build the job service and dispatcher from settings (shared by ingress and dispatcher)."""

from __future__ import annotations

from collections.abc import Callable

from services.auth.keys import ApiKeyStore
from services.config import Settings
from services.jobs.dispatcher import Dispatcher
from services.jobs.outbox import WebhookOutbox
from services.jobs.queue import OUTBOX, OUTBOX_DEAD_LETTER, OUTBOX_GROUP, WorkQueue
from services.jobs.service import JobService, WeightCheck
from services.jobs.store import JobStore
from services.models.manifest import ModelSpec, load_manifest
from services.net.fetch import SafeFetcher, public_or_in
from services.pipelines.backend import TaskBackend
from services.pipelines.presets import load_presets
from services.redis_client import connect_redis
from services.storage.factory import open_store
from services.telemetry.clients import TracedObjectStore
from services.telemetry.live import LiveStats
from services.telemetry.metrics import PlatformMetrics
from services.webhooks.delivery import WebhookSender
from services.webhooks.secrets import WebhookSecrets

WEBHOOK_ANSWER_BYTES = 64 * 1024  # receivers' answers are read (and dropped) up to this


def build_job_service(settings: Settings, backend: TaskBackend | None = None) -> JobService:
    """The job service; ``backend`` says which deployments run (without it, presets
    are refused)."""
    redis = connect_redis(settings)
    queue = WorkQueue(redis, int(settings.visibility_timeout_s * 1000), settings.max_deliveries)
    server_secret = settings.webhook_secret
    secrets = WebhookSecrets(
        ApiKeyStore(redis), server_secret.get_secret_value() if server_secret else None
    )
    webhook_fetcher = SafeFetcher(
        max_bytes=WEBHOOK_ANSWER_BYTES,
        allow_http=settings.webhook_allow_http,
        policy=public_or_in(settings.webhook_allowed_networks),
    )
    return JobService(
        JobStore(redis, settings.retention_hours * 3600),
        queue,
        TracedObjectStore(open_store(settings), settings.storage_url.partition(":")[0]),
        SafeFetcher(max_bytes=settings.max_upload_bytes),
        load_manifest(settings.extra_manifest),
        settings,
        secrets,
        webhook_fetcher,
        load_presets(backend.serves() if backend else set(), settings.extra_presets),
        WeightCheck(backend),
    )


def build_dispatcher(
    settings: Settings,
    backend: TaskBackend,
    metrics: PlatformMetrics | None = None,
    live: LiveStats | None = None,
    route_added: Callable[[ModelSpec], None] | None = None,
) -> tuple[Dispatcher, JobService]:
    """The dispatcher and the job service it shares storage and Redis with;
    ``route_added``: the backend's ``adopt``, for models added at run time."""
    service = build_job_service(settings, backend)
    sender = WebhookSender(service.webhook_fetcher)
    outbox = WebhookOutbox(service, sender, outbox_queue(service), metrics=metrics)
    dispatcher = Dispatcher(
        service.store, service.queue, service.objects, backend, service.manifest, settings,
        service.load_input, outbox, metrics, live, service.presets, route_added,
    )  # fmt: skip
    return dispatcher, service


def outbox_queue(service: JobService) -> WorkQueue:
    """The webhook outbox stream, read like the work queue (one delivery per entry: the
    sender retries inside it)."""
    return WorkQueue(
        service.queue.redis, service.queue.visibility_timeout_ms, 1, OUTBOX, OUTBOX_GROUP,
        OUTBOX_DEAD_LETTER,
    )  # fmt: skip
