"""Liveness (``/healthz``) and readiness (``/readyz``) probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import BackendDep
from services.api.schemas import HealthPublic, ReadinessPublic

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_health() -> HealthPublic:
    """The ingress process answers; says nothing about the models."""
    return HealthPublic()


@router.get("/readyz", response_model=ReadinessPublic, responses={503: {"model": ReadinessPublic}})
async def read_readiness(backend: BackendDep) -> JSONResponse:
    """Ready only when every deployment answers and all its configured weights are loaded."""
    deployments = await backend.readiness()
    body = ReadinessPublic(
        ready=bool(deployments) and all(item.ready for item in deployments.values()),
        deployments=deployments,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
