"""``GET /v1/models``: the declared models and whether the replicas have them loaded."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import BackendDep, ManifestDep, SettingsDep
from services.api.schemas import DeploymentReadiness, ModelListPublic, ModelPublic
from services.config import Settings
from services.models.manifest import ModelSpec

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def read_models(
    settings: SettingsDep, manifest: ManifestDep, backend: BackendDep
) -> ModelListPublic:
    """List every declared model with its serving state."""
    upscaler = (await backend.readiness()).get("Upscaler")
    models = [_public(spec, settings, upscaler) for spec in manifest.models.values()]
    return ModelListPublic(default_model=settings.default_model, models=models)


def _public(
    spec: ModelSpec, settings: Settings, upscaler: DeploymentReadiness | None
) -> ModelPublic:
    """A spec with its state: not configured, unknown (deployment down), loaded, missing."""
    base = spec.model_dump(include={"name", "architecture", "scale", "license", "description"})
    if spec.name not in settings.models:
        return ModelPublic(**base, state="not_configured")
    if upscaler is None or upscaler.error:
        return ModelPublic(**base, state="unknown", detail=upscaler.error if upscaler else None)
    if spec.name in upscaler.loaded:
        return ModelPublic(**base, state="loaded")
    return ModelPublic(**base, state="missing", detail=upscaler.missing.get(spec.name))
