"""FastAPI dependencies: the settings, manifest and backend a route works with.

The serving layer puts them on ``app.state`` when the ingress starts; routes read them
through these aliases and never reach into the environment themselves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, UploadFile

from services.api.backend import PlatformBackend
from services.auth.guard import KeyGuard
from services.auth.keys import ApiKey
from services.config import Settings
from services.errors import Forbidden, PayloadTooLarge, ServiceUnavailable
from services.models.manifest import Manifest
from services.pipelines.presets import PresetLibrary
from services.telemetry.metrics import PlatformMetrics


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_manifest(request: Request) -> Manifest:
    manifest: Manifest = request.app.state.manifest
    return manifest


def get_metrics(request: Request) -> PlatformMetrics:
    metrics: PlatformMetrics = request.app.state.metrics
    return metrics


def get_presets(request: Request) -> PresetLibrary:
    presets: PresetLibrary = request.app.state.presets
    return presets


def get_backend(request: Request) -> PlatformBackend:
    backend: PlatformBackend | None = getattr(request.app.state, "backend", None)
    if backend is None:
        raise ServiceUnavailable("the model deployments are not connected yet")
    return backend


async def require_api_key(request: Request) -> ApiKey | None:
    """The caller's key when keys are on (401/429 otherwise); None when they are off."""
    guard: KeyGuard | None = request.app.state.key_guard
    if guard is None:
        return None
    return await guard.check(request.headers.get("authorization"))


async def require_admin(request: Request) -> ApiKey | None:
    """An admin key when keys are on (403 for others); open when keys are off, like
    every route of the embedded default."""
    key = await require_api_key(request)
    if key is not None and not key.admin:
        raise Forbidden(f"key {key.prefix} is not an admin key: pixserve keys create --admin")
    return key


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """An uploaded image's bytes, refused past ``max_upload_bytes`` without reading more."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        name = upload.filename or "upload"
        raise PayloadTooLarge(f"{name} is over the limit of {settings.max_upload_bytes} bytes")
    return data


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManifestDep = Annotated[Manifest, Depends(get_manifest)]
BackendDep = Annotated[PlatformBackend, Depends(get_backend)]
MetricsDep = Annotated[PlatformMetrics, Depends(get_metrics)]
PresetsDep = Annotated[PresetLibrary, Depends(get_presets)]
