"""The Ingress deployment: the FastAPI app, wired to the model deployments' handles."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.backend import graph_backend
from deployments.logs import structured_logs
from deployments.metrics import platform_metrics, start_live
from services.api.app import create_api
from services.config import Settings
from services.jobs.wiring import build_job_service


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class Ingress:
    """Decodes, tiles and encodes on CPU; only tiles travel to the Upscaler, whole
    images to the Codec."""

    def __init__(
        self,
        dispatcher: DeploymentHandle[Any],
        settings: Settings,
        **handles: DeploymentHandle[Any],
    ) -> None:
        structured_logs()
        self.settings = settings
        self.backend = graph_backend(settings, handles)
        self.dispatcher = dispatcher  # held so the graph deploys it; it needs no calls
        self.jobs = build_job_service(settings, self.backend)
        self.api = create_api(
            settings,
            self.backend,
            self.jobs,
            platform_metrics(),
            start_live(settings, self._describe),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.api

    def _describe(self) -> dict[str, Any]:
        return {"ongoing": self.api.state.ongoing.value}
