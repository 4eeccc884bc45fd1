"""The application graph: Ingress -> Upscaler, built from settings.

``app_builder`` is the ``import_path`` of ``serve_config.yaml``: the config's ``args``
become the Settings, and its ``deployments`` section tunes replicas and resources.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.upscaler import Upscaler
from services.config import Settings


def build_app(settings: Settings) -> Application:
    """Bind the graph: the ingress holds a handle to the upscaler."""
    upscaler = Upscaler.bind(settings)
    return Ingress.bind(upscaler, settings)


def app_builder(args: dict[str, Any]) -> Application:
    """Serve config entry point: ``args`` are Settings fields."""
    return build_app(Settings(**args))
