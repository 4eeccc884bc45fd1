"""What every model replica does besides its batch: GPU share, metrics gauges, the live
replica snapshot, the health check and Serve's ``user_config`` batch tuning."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import ray
from ray import serve

from deployments.metrics import platform_metrics, start_live
from services.config import BatchOptions, Settings
from services.errors import PixserveError
from services.jobs.progress import ProgressReporter
from services.models.priority import PriorityGate
from services.models.runtime import EngineStatus
from services.redis_client import connect_redis_sync
from services.telemetry.live import Ongoing
from services.telemetry.metrics import record_forward_pass

T = TypeVar("T")


class Engine(Protocol):
    """The part of an engine (tile or face) a replica reports on."""

    def status(self) -> EngineStatus: ...

    def gpu_memory(self) -> dict[str, float]: ...

    def check_health(self) -> None: ...


def gpu_share() -> float:
    """The GPU fraction Ray assigned to this replica (0 on CPU)."""
    resources = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("GPU", 0.0))


def unwrap(result: T | PixserveError) -> T:
    """A batched request's value, its error raised: errors are values only inside a
    ``@serve.batch`` (one bad request must not fail the others), exceptions elsewhere."""
    if isinstance(result, PixserveError):
        raise result
    return result


class EngineReplica:
    """Base of the model deployments; subclasses build ``engine`` then call ``start``,
    and name their ``@serve.batch`` method in ``batched``."""

    engine: Engine
    batched: Any = None  # the @serve.batch method, if any; Serve adds its setters at run time

    def start(self, settings: Settings, share: float) -> None:
        self.settings, self.gpu_share = settings, share
        self.metrics = platform_metrics()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.ongoing = Ongoing()
        self.gate = PriorityGate(settings.batch_max_requests)  # sync requests before job items
        self.progress = ProgressReporter(connect_redis_sync(settings))  # job items' progress
        self.record_gauges()
        start_live(settings, self._describe)
        self.tune(BatchOptions(max_batch_size=settings.batch_max_requests,
                               batch_wait_timeout_s=settings.batch_wait_timeout_s))  # fmt: skip

    def record_pass(self, model: str, items: int, capacity: int, seconds: float) -> None:
        record_forward_pass(self.metrics, model, items, capacity, seconds, self.gpu_share,
                            self.settings.gpu_hour_price_usd)  # fmt: skip

    def tune(self, batch: BatchOptions) -> None:
        if self.batched is None:
            return
        self.batched.set_max_batch_size(batch.max_batch_size)
        self.batched.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: batch size and wait, retuned without a restart."""
        self.tune(BatchOptions.model_validate(user_config))

    def status(self) -> EngineStatus:
        return self.engine.status()

    def record_gauges(self) -> None:
        """Model load times and GPU memory; re-set on every health check, because Ray
        exports a gauge only for a while after it was last set."""
        for name, seconds in self.engine.status().load_seconds.items():
            self.metrics.model_load_seconds.set(seconds, tags={"model": name})
        for kind, value in self.engine.gpu_memory().items():
            self.metrics.gpu_memory_bytes.set(value, tags={"kind": kind})

    def check_health(self) -> None:
        self.engine.check_health()
        self.record_gauges()

    def _describe(self) -> dict[str, Any]:
        status = self.engine.status()
        return {
            "ongoing": self.ongoing.value, "device": status.device, "gpu_share": self.gpu_share,
            "gpu_memory": self.engine.gpu_memory(), "models": sorted(status.loaded),
        }  # fmt: skip
