"""The FastAPI application: routers, error envelope, and the upload size guard."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response

from services.api.backend import PlatformBackend
from services.api.deps import require_api_key
from services.api.errors import error_response, install_error_handlers
from services.api.routes import health, jobs, models, upscale
from services.auth.guard import KeyGuard
from services.config import Settings
from services.jobs.service import JobService
from services.models.manifest import load_manifest
from services.telemetry.metrics import PlatformMetrics, in_memory
from services.telemetry.tracing import current_trace_id

_MULTIPART_OVERHEAD = 64 * 1024


def create_api(
    settings: Settings,
    backend: PlatformBackend | None = None,
    job_service: JobService | None = None,
    metrics: PlatformMetrics | None = None,
) -> FastAPI:
    """Build the API; ``backend``, ``job_service`` and ``metrics`` come from the serving
    layer (without metrics, they are kept in memory)."""
    app = FastAPI(
        title="pixserve",
        version="0.1.0",
        description="Image restoration and upscaling on Ray Serve.",
    )
    app.state.settings = settings
    app.state.manifest = load_manifest(settings.extra_manifest)
    app.state.backend = backend
    app.state.jobs = job_service
    app.state.metrics = metrics or in_memory()[0]
    app.state.key_guard = KeyGuard.from_settings(settings) if settings.api_keys_enabled else None
    install_error_handlers(app)
    _install_body_limit(
        app, settings.max_upload_bytes + _MULTIPART_OVERHEAD, settings.max_job_bytes
    )
    _install_request_metrics(app, app.state.metrics)
    keyed = [Depends(require_api_key)]
    for router in (upscale.router, models.router, jobs.router):
        app.include_router(router, dependencies=keyed)
    app.include_router(health.router)
    return app


def _install_body_limit(app: FastAPI, single: int, job_limit: int) -> None:
    """Refuse an over-long body from its Content-Length, before it is read or spooled;
    a job submission may carry many images, so it has its own, larger limit."""

    @app.middleware("http")
    async def _limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        is_job = request.method == "POST" and request.url.path.endswith("/v1/jobs")
        limit = job_limit if is_job else single
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error_response(
                413, "payload_too_large", f"request body is {declared} bytes; limit {limit}"
            )
        return await call_next(request)


def _install_request_metrics(app: FastAPI, metrics: PlatformMetrics) -> None:
    """Count every request by route template and status, and time it (outermost, so
    refusals by the body limit count too); the trace id goes back as ``X-Trace-Id``."""

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        trace_id = current_trace_id()
        if trace_id:
            response.headers["X-Trace-Id"] = trace_id
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.requests.inc(tags={"route": route, "code": str(response.status_code)})
        metrics.request_seconds.observe(time.perf_counter() - started, tags={"route": route})
        return response
