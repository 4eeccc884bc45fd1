"""What the serving layer tells the API and the console: its deployments' state, and
the ``PlatformBackend`` protocol the Serve adapter implements.

Neutral ground: the API's routes and the operator console both read it, and neither
imports the other's modules for it.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from services.imaging.codec import DecodedImage
from services.pipelines.backend import TaskBackend


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


class PlatformBackend(TaskBackend, Protocol):
    """The use cases' backend, plus vision questions and the state of the deployments."""

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        """Per deployment: reachable, device, loaded and missing models."""
        ...

    async def deployments(self) -> tuple[str, list[DeploymentView]]:
        """This application's name and deployments: status, running and target replicas."""
        ...

    async def answer(
        self, image: DecodedImage, question: str, max_tokens: int
    ) -> tuple[str, int, int]:
        """A visual question's answer and the prompt's and answer's token counts."""
        ...
