"""The API's backend over Serve handles: tile calls and readiness of the model deployments."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle

from services.api.schemas import DeploymentReadiness
from services.errors import PixserveError, ServiceUnavailable
from services.models.upscaler import EngineStatus, TileRequest
from services.telemetry.tracing import current_traceparent


class ServeBackend:
    """Implements ``PlatformBackend`` by calling the Upscaler deployment's handle."""

    def __init__(self, upscaler: DeploymentHandle[Any], status_timeout_s: float = 5.0) -> None:
        self.upscaler = upscaler
        self.status_timeout_s = status_timeout_s

    async def upscale_tiles(self, model: str, tiles: np.ndarray) -> np.ndarray:
        request = TileRequest(model, tiles, _request_id(), current_traceparent())
        try:
            result = await self.upscaler.upscale_batch.remote(request)
        except RayError as exc:
            raise ServiceUnavailable(f"the Upscaler deployment failed: {exc}") from exc
        if isinstance(result, PixserveError):
            raise result
        return np.asarray(result)

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        try:
            call = self.upscaler.status.remote()
            status: EngineStatus = await asyncio.wait_for(call, self.status_timeout_s)
        except (RayError, TimeoutError) as exc:
            error = f"unreachable: {type(exc).__name__}"
            return {"Upscaler": DeploymentReadiness(ready=False, error=error)}
        return {
            "Upscaler": DeploymentReadiness(
                ready=bool(status.loaded) and not status.missing,
                device=status.device,
                loaded=sorted(status.loaded),
                missing=status.missing,
            )
        }


def _request_id() -> str:
    """Serve's request id when inside a request (it is returned as x-request-id)."""
    try:
        return serve.context._get_serve_request_context().request_id or uuid.uuid4().hex
    except AttributeError:
        return uuid.uuid4().hex
