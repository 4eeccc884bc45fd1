"""Response bodies of the public API, named ``<Thing>Public`` as they leave the service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """A machine-readable code and a message a person can act on."""

    code: str
    message: str


class ErrorPublic(BaseModel):
    """The one error envelope every 4xx/5xx carries."""

    error: ErrorDetail


# The error answers of the image routes, for their OpenAPI documentation.
IMAGE_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorPublic} for code in (400, 413, 415, 422, 503)
}


class ModelPublic(BaseModel):
    """A declared model and whether the serving replicas have it loaded."""

    name: str
    task: str
    architecture: str
    scale: int
    license: str
    description: str
    state: Literal["loaded", "missing", "not_configured", "unknown"]
    detail: str | None = None


class ModelListPublic(BaseModel):
    default_model: str
    default_denoise_model: str
    default_face_model: str
    default_face_detector: str
    models: list[ModelPublic]


class DeploymentReadiness(BaseModel):
    """One deployment's readiness: reachable, and which models wait for what. One that
    nothing is configured for runs no replica: ready (nothing waits), ``configured``
    false, and ``detail`` names the settings that would start it."""

    ready: bool
    configured: bool = True
    device: str | None = None
    loaded: list[str] = Field(default_factory=list)
    missing: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    detail: str | None = None


class ReadinessPublic(BaseModel):
    ready: bool
    deployments: dict[str, DeploymentReadiness]


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class DeploymentView(BaseModel):
    """A deployment as Serve's controller sees it: state, replicas, resources."""

    name: str
    status: str
    running: int
    target: int
    num_cpus: float = 0
    num_gpus: float = 0
    min_replicas: int | None = None
    max_replicas: int | None = None
    message: str = ""
