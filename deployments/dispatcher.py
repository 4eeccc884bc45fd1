"""The Dispatcher deployment: runs the job dispatcher loop on each replica."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.autoscaling import BACKLOG_METRIC
from deployments.backend import graph_backend
from deployments.logs import structured_logs
from deployments.metrics import platform_metrics, start_live
from services.config import Settings
from services.jobs.wiring import build_dispatcher


@serve.deployment(name="Dispatcher", ray_actor_options={"num_cpus": 0.25})
class Dispatcher:
    """Consumes the work queue; items reach the models through their handles (upscale
    jobs the Upscaler's tiles, preset jobs the chain of their steps)."""

    def __init__(self, settings: Settings, **handles: DeploymentHandle[Any]) -> None:
        structured_logs()
        live = start_live(settings, self._describe)
        backend = graph_backend(settings, handles, background=True)  # sync requests first
        self.dispatcher, jobs = build_dispatcher(settings, backend, platform_metrics(), live,
                                                 backend.adopt)  # fmt: skip
        consumer = serve.get_replica_context().replica_id.unique_id
        self.loop = asyncio.get_running_loop().create_task(
            self.dispatcher.run_forever(consumer, housekeeping=jobs.apply_retention)
        )

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """The work queue's backlog, for the Dispatcher's autoscaling policy."""
        return {BACKLOG_METRIC: float(await self.dispatcher.queue.backlog())}

    def check_health(self) -> None:
        if self.loop.done():
            raise RuntimeError(f"the dispatch loop stopped: {self.loop.exception()!r}")

    def _describe(self) -> dict[str, Any]:
        dispatcher = getattr(self, "dispatcher", None)  # the flusher may run before it
        if dispatcher is None:
            return {"ongoing": 0}
        return {"ongoing": len(dispatcher.in_flight), "processed": dispatcher.processed}

    def processed(self) -> int:
        return self.dispatcher.processed
