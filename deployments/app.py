"""The application graph: Ingress -> Upscaler, Denoiser, FaceRestorer (-> Upscaler for
backgrounds), Diffusion, Vision and Codec; the Dispatcher -> the same deployments for
jobs. Presets chain the model deployments' calls. A model deployment the settings give
nothing to serve is left out (its handle is None), so it takes no replica and no
memory; the API still lists it as not configured.

``app_builder`` is the ``import_path`` of ``serve_config.yaml``: the config's ``args``
become the Settings, and its ``deployments`` section tunes replicas and resources.
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application, Deployment

from deployments.codec import Codec
from deployments.diffusion import Diffusion
from deployments.dispatcher import Dispatcher
from deployments.faces import FaceRestorer
from deployments.ingress import Ingress
from deployments.upscaler import Denoiser, Upscaler
from deployments.vision import Vision
from services.config import Settings
from services.models.manifest import deployments_in_use


def build_app(settings: Settings) -> Application:
    """Bind the graph: the ingress holds handles to every model deployment in use."""
    used = deployments_in_use(settings)

    def bind(deployment: Any, *args: Any) -> Application | None:
        # serve.deployment turns the classes into Deployments; its typing does not say so
        name = cast(Deployment, deployment).name
        return cast(Deployment, deployment).bind(*args) if name in used else None

    upscaler = cast(Deployment, Upscaler).bind(settings)
    denoiser = bind(Denoiser, settings)
    codec = cast(Deployment, Codec).bind(settings)
    faces = bind(FaceRestorer, upscaler, settings)
    diffusion = bind(Diffusion, settings)
    vision = bind(Vision, settings)
    models = (upscaler, denoiser, codec, faces, diffusion, vision)
    dispatcher = cast(Deployment, Dispatcher).bind(*models, settings)
    return cast(Deployment, Ingress).bind(dispatcher, *models, settings)


def app_builder(args: dict[str, Any]) -> Application:
    """Serve config entry point: ``args`` are Settings fields."""
    return build_app(Settings(**args))
