"""What the serving layer tells the API and the console: its deployments' state, and
the ``PlatformBackend`` protocol the Serve adapter implements.

Neutral ground: the API's routes and the operator console both read it, and neither
imports the other's modules for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from services.imaging.codec import DecodedImage
from services.models.manifest import ModelSpec
from services.models.vision import Answer, Question
from services.pipelines.backend import TaskBackend

if TYPE_CHECKING:
    from services.admin.control import ModelCommand, ReplicaReport

logger = logging.getLogger(__name__)
Readiness = dict[str, "DeploymentReadiness"]


class DeploymentReadiness(BaseModel):
    """One deployment's readiness: reachable, and which models wait for what. One that
    nothing is configured for runs no replica: ready (nothing waits), ``configured``
    false, and ``detail`` names the settings that would start it."""

    ready: bool
    configured: bool = True
    device: str | None = None
    loaded: list[str] = Field(default_factory=list)
    resting: list[str] = Field(default_factory=list)  # unloaded at run time: load on use
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

    def adopt(self, spec: ModelSpec) -> None:
        """A model added at run time: route its requests to its task's deployment."""
        ...

    async def control(
        self, deployment: str, command: ModelCommand, timeout_s: float
    ) -> tuple[int, list[ReplicaReport]]:
        """``command`` to every replica of ``deployment``: how many heard it, and the
        reports that came back within ``timeout_s``."""
        ...

    def answer(self, image: DecodedImage, question: Question) -> AsyncIterator[str | Answer]:
        """A visual question's answer as it is written: text pieces, then the whole
        ``Answer`` with its token counts."""
        ...


class ReadinessCache:
    """The deployments' readiness as they last reported it, for probes, listings and the
    job weight check: read at most once per ``ttl_s`` however many callers ask (one
    read at a time), in the background once there is an answer, so no caller waits on a
    busy model. Only the first caller waits, and at most ``first_wait_s``. A deployment
    that stops answering keeps its last good state for ``grace_s`` (a replica busy with
    a long batch is not down); after that its error shows."""

    def __init__(
        self, read: Callable[[], Awaitable[Readiness]], ttl_s: float = 2.0,
        first_wait_s: float = 10.0, grace_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.read, self.ttl_s = read, ttl_s
        self.first_wait_s, self.grace_s = first_wait_s, grace_s
        self.value: Readiness | None = None
        self.read_at = 0.0
        self.good_at: dict[str, float] = {}
        self.refreshing: asyncio.Task[None] | None = None

    async def get(self) -> Readiness | None:
        """The latest answer; None only before any read finished."""
        if self.value is not None and time.monotonic() - self.read_at < self.ttl_s:
            return self.value
        if self.refreshing is None or self.refreshing.done():
            self.refreshing = asyncio.create_task(self._refresh())
        if self.value is None:
            try:
                await asyncio.wait_for(asyncio.shield(self.refreshing), self.first_wait_s)
            except TimeoutError:
                return None
        return self.value

    async def refresh(self) -> None:
        """Read now (after a change the cached answer does not know: a model unloaded)."""
        if self.refreshing is not None and not self.refreshing.done():
            await asyncio.shield(self.refreshing)
        self.refreshing = asyncio.create_task(self._refresh())
        await asyncio.shield(self.refreshing)

    async def _refresh(self) -> None:
        try:
            fresh = await self.read()
        except Exception as exc:  # whatever failed: the last answer stands
            logger.warning("deployment readiness unreadable: %r", exc)
            return
        now = time.monotonic()
        merged = dict(fresh)
        for name, state in fresh.items():
            previous = (self.value or {}).get(name)
            if state.error is None:
                self.good_at[name] = now
            elif previous is not None and now - self.good_at.get(name, -1e9) < self.grace_s:
                merged[name] = previous  # silent for a moment: busy, not down
        self.value, self.read_at = merged, now
