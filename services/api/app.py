"""The FastAPI application: routers, error envelope, and the body size guard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.admin.console import Console
from services.api.deps import require_api_key, strict_body
from services.api.errors import BodyTooLarge, failed, install_error_handlers
from services.api.routes import (
    admin,
    admin_models,
    channel,
    convert,
    denoise,
    faces,
    generate,
    health,
    jobs,
    mesh,
    models,
    openai,
    pages,
    presets,
    upscale,
    vision,
)
from services.api.schemas import ADMIN_ERRORS, COMMON_ERRORS, JOB_ERRORS, errors
from services.auth.guard import KeyGuard
from services.config import Settings
from services.jobs.service import JobService
from services.jobs.wiring import outbox_queue
from services.models.catalog import keep_adopting
from services.models.manifest import load_manifest
from services.net.fetch import SafeFetcher
from services.pipelines.presets import load_presets
from services.platform import PlatformBackend, ReadinessCache
from services.telemetry.live import LiveReader, LiveStats, Ongoing
from services.telemetry.metrics import PlatformMetrics, in_memory
from services.telemetry.tracing import current_trace_id

logger = logging.getLogger(__name__)
_MULTIPART_OVERHEAD = 64 * 1024


def _readiness(backend: PlatformBackend | None, jobs: JobService | None) -> ReadinessCache | None:
    """One cache of the deployments' readiness per Ingress: the job service's weight
    check and the probes and listings share it (one read per period, not two)."""
    if jobs is not None and jobs.weights.cache is not None:
        return jobs.weights.cache
    return ReadinessCache(backend.readiness) if backend else None


def create_api(
    settings: Settings,
    backend: PlatformBackend | None = None,
    job_service: JobService | None = None,
    metrics: PlatformMetrics | None = None,
    live: LiveStats | None = None,
) -> FastAPI:
    """Build the API; ``backend``, ``job_service``, ``metrics`` and ``live`` (the
    dashboard's buffer, which records recent errors) come from the serving layer
    (without them, metrics are kept in memory and errors are not logged)."""
    app = FastAPI(
        title="pixserve",
        version="0.1.0",
        description="Image restoration and upscaling on Ray Serve.",
        lifespan=_adopting_added_models,
    )
    app.state.settings = settings
    app.state.started_at = time.time()  # OpenAI's model listing reports it as `created`
    # one manifest per process, the job service's when there is one: a model added at
    # run time is adopted into it once (services/models/catalog.py)
    app.state.manifest = job_service.manifest if job_service else load_manifest(
        settings.extra_manifest)  # fmt: skip
    app.state.image_fetcher = SafeFetcher(max_bytes=settings.max_upload_bytes)
    app.state.presets = load_presets(backend.serves() if backend else set(), settings.extra_presets)
    app.state.backend = backend
    app.state.readiness = _readiness(backend, job_service)
    app.state.jobs = job_service
    app.state.metrics = metrics or in_memory()[0]
    app.state.key_guard = KeyGuard.from_settings(settings) if settings.api_keys_enabled else None
    app.state.ongoing = Ongoing()
    app.state.console = None
    if job_service is not None:
        app.state.console = Console(
            job_service, outbox_queue(job_service), LiveReader(job_service.queue.redis),
            backend, settings.gpu_hour_price_usd,
        )  # fmt: skip
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit, single=settings.max_upload_bytes + _MULTIPART_OVERHEAD,
        job_limit=settings.max_job_bytes,
        model_limit=settings.max_model_bytes + _MULTIPART_OVERHEAD,
    )  # fmt: skip
    _install_request_metrics(app, app.state.metrics, app.state.ongoing, live)  # outermost
    keyed = [Depends(require_api_key), Depends(strict_body)]
    routers = (upscale, denoise, faces, generate, vision, mesh, openai, convert, presets, models)
    for router in (module.router for module in routers):
        app.include_router(router, dependencies=keyed, responses=COMMON_ERRORS)
    app.include_router(jobs.router, dependencies=keyed, responses=COMMON_ERRORS | JOB_ERRORS)
    app.include_router(channel.router)  # the WebSocket authenticates inside
    for module in (admin, admin_models):  # admin keys
        app.include_router(module.router, responses=COMMON_ERRORS | ADMIN_ERRORS)
    app.include_router(health.router, responses=errors(500))
    app.include_router(pages.router)  # the upload page and the dashboard: static files
    return app


@contextlib.asynccontextmanager
async def _adopting_added_models(app: FastAPI) -> AsyncIterator[None]:
    """While the app runs, models added at run time on another ingress replica become
    servable here too (services/models/catalog.py)."""
    jobs: JobService | None = app.state.jobs
    backend: PlatformBackend | None = app.state.backend
    if jobs is None or backend is None:
        yield
        return
    task = asyncio.create_task(keep_adopting(jobs.store.redis, app.state.manifest,
                                             app.state.settings, backend.adopt))  # fmt: skip
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BodyLimit:
    """Refuse an over-long body: from its Content-Length before any of it is read, and
    on the stream itself (a chunked body declares no length), counting every chunk as
    it arrives; a job submission may carry many images, and an operator's model upload
    (/v1/admin/models) a large weight file, so each has its own, larger limit."""

    def __init__(self, app: ASGIApp, single: int, job_limit: int, model_limit: int) -> None:
        self.app = app
        self.single = single
        self.job_limit = job_limit
        self.model_limit = model_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        posted = scope["method"] == "POST"
        if posted and scope["path"].endswith("/v1/jobs"):
            limit = self.job_limit
        elif posted and scope["path"].endswith("/v1/admin/models"):  # an operator's weights
            limit = self.model_limit
        else:
            limit = self.single
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            message = f"request body is {declared} bytes; limit {limit}"
            refusal = failed(Request(scope), 413, "payload_too_large", message)  # logged too
            await refusal(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _install_request_metrics(
    app: FastAPI, metrics: PlatformMetrics, ongoing: Ongoing, live: LiveStats | None
) -> None:
    """Count every request by route template and status, and time it (outermost, so
    refusals by the body limit count too); the trace id goes back as ``X-Trace-Id``;
    each failure is logged once with its class (the error code) and goes to the
    recent-errors log with its code, message and trace id."""

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        with ongoing:
            response = await call_next(request)
        trace_id = current_trace_id()
        if trace_id:
            response.headers["X-Trace-Id"] = trace_id
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.requests.inc(tags={"route": route, "code": str(response.status_code)})
        metrics.request_seconds.observe(time.perf_counter() - started, tags={"route": route})
        if response.status_code >= 400:
            code, message = getattr(request.state, "error", ("", ""))
            level = logging.ERROR if response.status_code >= 500 else logging.INFO
            logger.log(level, "%s %s answered %d %s", request.method, route,
                       response.status_code, code,
                       extra={"error_class": code, "status": response.status_code})  # fmt: skip
        if live is not None and response.status_code >= 400:
            live.error(source="api", method=request.method, route=route,
                       status=response.status_code, code=code, message=message[:500],
                       trace_id=trace_id)  # fmt: skip
        return response
