"""The application graph: Ingress -> Upscaler, Denoiser, FaceRestorer (-> Upscaler for
backgrounds), Diffusion, Vision, Mesher and Codec (and TileFallback with
``cpu_fallback``); the Dispatcher -> the same deployments for jobs. Presets chain the
model deployments' calls. A model deployment the settings give nothing to serve is left
out (no handle by its name), so it takes no replica and no memory; the API still lists
it as not configured (services/registry.py says which).

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
from deployments.mesher import Mesher
from deployments.upscaler import Denoiser, TileFallback, Upscaler
from deployments.vision import Vision
from services.config import Settings
from services.registry import deployments_in_use


def build_app(settings: Settings) -> Application:
    """Bind the graph: the Ingress and the Dispatcher hold the handles of every model
    deployment in use (and the Codec), by name."""
    used = deployments_in_use(settings)
    upscaler = cast(Deployment, Upscaler).bind(settings)
    bound: dict[str, Any] = {"Upscaler": upscaler, "Codec": cast(Deployment, Codec).bind(settings)}
    for deployment, args in ((Denoiser, (settings,)), (FaceRestorer, (upscaler, settings)),
                             (Diffusion, (settings,)), (Vision, (settings,)),
                             (Mesher, (settings,)), (TileFallback, (settings,))):  # fmt: skip
        # serve.deployment turns the classes into Deployments; its typing does not say so
        name = cast(Deployment, deployment).name
        if name in used:
            bound[name] = cast(Deployment, deployment).bind(*args)
    # handles as keyword arguments, one per deployment by name (top-level arguments, so
    # Serve resolves each into a handle as it does for positional ones)
    dispatcher = cast(Deployment, Dispatcher).bind(settings, **bound)
    return cast(Deployment, Ingress).bind(dispatcher, settings, **bound)


def app_builder(args: dict[str, Any]) -> Application:
    """Serve config entry point: ``args`` are Settings fields."""
    return build_app(Settings(**args))
