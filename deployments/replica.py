"""What every model replica does besides its batch: GPU share, metrics gauges, the live
replica snapshot, the health check, Serve's ``user_config`` (batch tuning, memory
mode), the operator's model commands (report, load, unload, memory mode) from the
control channel, and the low memory mode's idle unloading."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, TypeVar

import ray
from ray import serve
from redis.exceptions import RedisError

from deployments.metrics import platform_metrics, start_live
from services.admin.control import (
    CommandListener,
    ModelCommand,
    ReplicaReport,
    channel,
    remembered_mode,
)
from services.config import BatchOptions, MemoryMode, Settings
from services.errors import Conflict, PixserveError
from services.jobs.progress import ProgressReporter
from services.models.priority import PriorityGate
from services.models.residency import ModelState, Residency, process_rss
from services.models.runtime import EngineStatus
from services.redis_client import connect_redis_sync
from services.telemetry.live import Ongoing
from services.telemetry.metrics import record_forward_pass

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Engine(Protocol):
    """The part of an engine (tile or face) a replica reports on."""

    def status(self) -> EngineStatus: ...

    def gpu_memory(self) -> dict[str, float]: ...

    def check_health(self) -> None: ...

    def set_memory_mode(self, mode: MemoryMode) -> None: ...


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
        # the memory mode: an operator's run-time choice, else the user_config's (Serve
        # calls ``reconfigure`` after this), else the setting
        context = serve.get_replica_context()
        self.deployment, client = context.deployment, connect_redis_sync(settings)
        self.configured_mode: MemoryMode = settings.memory_mode
        self.operator_mode: MemoryMode | None = None
        try:
            self.operator_mode = remembered_mode(client, context.app_name, self.deployment)
        except RedisError as exc:  # the replica must still start
            logger.warning("memory mode not read from Redis: %s", exc)
        self.memory_mode = settings.memory_mode
        self.apply_memory_mode()
        topic = channel(context.app_name, self.deployment)
        self.control = CommandListener(client, topic, self.on_command).start()
        threading.Thread(target=self._unload_idle, name="pixserve-idle", daemon=True).start()

    def record_pass(self, model: str, items: int, capacity: int, seconds: float) -> None:
        record_forward_pass(self.metrics, model, items, capacity, seconds, self.gpu_share,
                            self.settings.gpu_hour_price_usd)  # fmt: skip

    def tune(self, batch: BatchOptions) -> None:
        if self.batched is None:
            return
        self.batched.set_max_batch_size(batch.max_batch_size)
        self.batched.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: batch size and wait, and the memory mode, changed
        without a restart (an operator's run-time mode still wins)."""
        options = BatchOptions.model_validate(user_config)
        self.tune(options)
        self.configured_mode = options.memory_mode or self.settings.memory_mode
        self.apply_memory_mode()

    def apply_memory_mode(self) -> None:
        """The operator's mode if one is set, else the configured one, to the engine."""
        self.memory_mode = self.operator_mode or self.configured_mode
        self.engine.set_memory_mode(self.memory_mode)  # idempotent

    def _unload_idle(self) -> None:
        """In the low memory mode, unload every model unused for ``idle_unload_s``."""
        period = min(30.0, self.settings.idle_unload_s / 2)
        while True:
            time.sleep(period)
            if self.memory_mode == "low" and isinstance(self.engine, Residency):
                for name in self.engine.unload_idle(self.settings.idle_unload_s):
                    logger.info("unloaded %s: unused for %g s", name, self.settings.idle_unload_s)

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

    def on_command(self, command: ModelCommand) -> ReplicaReport:
        """An operator's command, on the control channel's thread: report the models,
        load or unload one (unloading frees its memory; the report shows the process's
        resident memory before and after), or change the memory mode."""
        engine, before, started = self.engine, process_rss(), time.perf_counter()
        changed, error = False, None
        try:
            if command.action == "memory_mode":
                self.operator_mode = command.mode
                previous = self.memory_mode
                self.apply_memory_mode()
                changed = self.memory_mode != previous
            elif command.action == "adopt":
                changed = bool(self.adopt_added())
            elif isinstance(engine, Residency) and command.model in engine.configured_models():
                name = str(command.model)
                if command.action == "load":
                    changed = name not in engine.status().loaded
                    engine.load_model(name)
                elif command.action == "unload":
                    changed = engine.unload_model(name)
        except PixserveError as exc:
            error = exc.message
        return self.report(changed, before, time.perf_counter() - started, error)

    def adopt_added(self) -> list[str]:
        """Fetch and load the models added at run time for this deployment; the names
        it had not served. The tile deployments can; the others cannot yet."""
        raise Conflict(f"models cannot be added to the {self.deployment} deployment at run "
                       "time")  # fmt: skip

    def report(
        self, changed: bool = False, rss_before: int | None = None, seconds: float = 0.0,
        error: str | None = None,
    ) -> ReplicaReport:  # fmt: skip
        """This replica's models, memory, device and memory mode now."""
        status = self.engine.status()
        if isinstance(self.engine, Residency):
            models = self.engine.model_states(status.missing, status.load_seconds)
        else:  # what it loaded so far (the Diffusion deployment's checkpoints)
            models = [ModelState(name=name, loaded=True, load_seconds=status.load_seconds.get(name))
                      for name in status.loaded]  # fmt: skip
        return ReplicaReport(
            replica=self.replica, deployment=self.deployment, device=status.device,
            memory_mode=self.memory_mode, rss_bytes=process_rss(),
            gpu_memory=self.engine.gpu_memory(), models=models, changed=changed,
            rss_before=rss_before, seconds=seconds, error=error,
        )  # fmt: skip

    def _describe(self) -> dict[str, Any]:
        status = self.engine.status()
        return {
            "ongoing": self.ongoing.value, "device": status.device, "gpu_share": self.gpu_share,
            "gpu_memory": self.engine.gpu_memory(), "models": sorted(status.loaded),
        }  # fmt: skip
