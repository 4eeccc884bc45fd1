"""The tile-model deployments: the Upscaler and the Denoiser, each the tile engine
behind ``@serve.batch`` over tile stacks, with its own models, replicas and GPU share."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import ray
from ray import serve

from deployments.metrics import platform_metrics, start_live
from services.config import BatchOptions, Settings
from services.errors import PixserveError
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineStatus, ForwardPass, TileRequest, UpscaleEngine
from services.telemetry.live import Ongoing
from services.telemetry.metrics import record_forward_pass
from services.telemetry.tracing import batch_span


class TileModels:
    """Loads its models once; batches concurrent requests' tiles together."""

    def __init__(self, settings: Settings, models: list[str]) -> None:
        store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
        resources = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        share = float(resources.get("GPU", 0.0))
        self.engine = UpscaleEngine(settings, store, models, gpu_share=share)
        self.metrics = platform_metrics()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.engine.on_pass = lambda p: record_forward_pass(
            self.metrics, p.model, p.tiles, p.capacity, p.seconds, share,
            settings.gpu_hour_price_usd,
        )  # fmt: skip
        self.engine.load()
        self.record_gauges()
        self.ongoing, self.gpu_share = Ongoing(), share
        start_live(settings, self._describe)
        # serve.batch adds these setters to the method at run time; mypy cannot see them.
        self.upscale_batch.set_max_batch_size(settings.batch_max_requests)  # type: ignore[attr-defined]
        self.upscale_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)  # type: ignore[attr-defined]

    async def upscale(self, request: TileRequest) -> np.ndarray | PixserveError:
        """One request's tiles, batched with other requests' (counted while ongoing)."""
        with self.ongoing:
            result: np.ndarray | PixserveError = await self.upscale_batch(request)
            return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def upscale_batch(self, requests: list[TileRequest]) -> list[np.ndarray | PixserveError]:
        with batch_span("pixserve.batch", [r.traceparent for r in requests],
                        batch_requests=len(requests),
                        batch_tiles=sum(len(r.tiles) for r in requests),
                        device=str(self.engine.device), replica=self.replica):  # fmt: skip
            return await asyncio.to_thread(self.engine.predict, requests)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: batch size and wait, retuned without a restart."""
        batch = BatchOptions.model_validate(user_config)
        self.upscale_batch.set_max_batch_size(batch.max_batch_size)  # type: ignore[attr-defined]
        self.upscale_batch.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def status(self) -> EngineStatus:
        return self.engine.status()

    def forward_passes(self) -> list[ForwardPass]:
        return list(self.engine.passes)

    def record_gauges(self) -> None:
        """Model load times and GPU memory; re-set on every health check, because Ray
        exports a gauge only for a while after it was last set."""
        for name, seconds in self.engine.status().load_seconds.items():
            self.metrics.model_load_seconds.set(seconds, tags={"model": name})
        for kind, value in self.engine.gpu_memory().items():
            self.metrics.gpu_memory_bytes.set(value, tags={"kind": kind})

    def _describe(self) -> dict[str, Any]:
        status = self.engine.status()
        return {
            "ongoing": self.ongoing.value, "device": status.device, "gpu_share": self.gpu_share,
            "gpu_memory": self.engine.gpu_memory(), "models": sorted(status.loaded),
        }  # fmt: skip

    def check_health(self) -> None:
        self.engine.check_health()
        self.record_gauges()


@serve.deployment(name="Upscaler", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Upscaler(TileModels):
    """Real-ESRGAN models (``settings.models``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.models)


@serve.deployment(name="Denoiser", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Denoiser(TileModels):
    """Denoising models, SCUNet and DnCNN (``settings.denoise_models``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.denoise_models)
