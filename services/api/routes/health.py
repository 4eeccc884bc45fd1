"""Liveness (``/healthz``) and readiness (``/readyz``) probes.

Readiness answers from the deployments' last reports (services/platform.py:
ReadinessCache), so a probe never waits on a busy model, and from a bounded ping of
the job store where jobs are on: a pod whose job routes would answer 503 is not ready.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.deps import ReadinessDep
from services.api.schemas import HealthPublic, ReadinessPublic
from services.jobs.service import JobService
from services.platform import DeploymentReadiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_health() -> HealthPublic:
    """The ingress process answers; says nothing about the models."""
    return HealthPublic()


@router.get("/readyz", response_model=ReadinessPublic, responses={503: {"model": ReadinessPublic}})
async def read_readiness(request: Request, readiness: ReadinessDep) -> JSONResponse:
    """Ready when every deployment has its configured weights loaded and, where jobs
    are on, the job store answers."""
    deployments = readiness or {}
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    store = None
    if jobs is not None:
        error = await jobs.store_error()
        store = DeploymentReadiness(ready=error is None, error=error)
    body = ReadinessPublic(
        ready=bool(deployments) and all(item.ready for item in deployments.values())
        and (store is None or store.ready),
        deployments=deployments,
        job_store=store,
    )  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
