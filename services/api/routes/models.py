"""``GET /v1/models``: the declared models and whether the replicas have them loaded."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import ManifestDep, ReadinessDep, SettingsDep
from services.api.schemas import ModelListPublic, ModelPublic
from services.config import Settings
from services.models.manifest import ModelSpec
from services.platform import DeploymentReadiness
from services.registry import DEPLOYMENT_OF_TASK

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def read_models(
    settings: SettingsDep, manifest: ManifestDep, readiness: ReadinessDep
) -> ModelListPublic:
    """List every declared model with its task and serving state (as the deployments
    last reported it, at most a few seconds old)."""
    readiness = readiness or {}
    models = [
        _public(spec, settings, readiness.get(DEPLOYMENT_OF_TASK[spec.task]))
        for spec in manifest.models.values()
    ]
    return ModelListPublic(
        default_model=settings.default_model,
        default_denoise_model=settings.default_denoise_model,
        default_face_model=settings.default_face_model,
        default_face_detector=settings.default_face_detector,
        models=models,
    )


def _public(
    spec: ModelSpec, settings: Settings, deployment: DeploymentReadiness | None
) -> ModelPublic:
    """A spec with its state: not configured, unknown (deployment down), loaded, missing."""
    base = spec.model_dump(
        include={"name", "task", "architecture", "scale", "license", "description"}
    )
    if spec.name not in settings.configured(spec.task):
        return ModelPublic(**base, state="not_configured")
    if deployment is None or deployment.error:
        detail = deployment.error if deployment else None
        return ModelPublic(**base, state="unknown", detail=detail)
    if spec.name in deployment.loaded:
        return ModelPublic(**base, state="loaded")
    return ModelPublic(**base, state="missing", detail=deployment.missing.get(spec.name))
