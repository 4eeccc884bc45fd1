"""``GET /v1/models``: the declared models and whether the replicas have them loaded,
with OpenAI's list shape beside; ``GET /v1/models/{id}`` for one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.api.deps import ManifestDep, ReadinessDep, SettingsDep
from services.api.schemas import ModelListPublic, ModelPublic, OpenAIModelPublic, errors
from services.config import Settings
from services.errors import PixserveError
from services.models.manifest import Manifest, ModelSpec
from services.platform import DeploymentReadiness, Readiness
from services.registry import DEPLOYMENT_OF_TASK

router = APIRouter(tags=["models"])


class OpenAIModelStatePublic(OpenAIModelPublic):
    """One model in OpenAI's shape, with its serving state."""

    state: str
    detail: str | None = None


class ModelNotFound(PixserveError):
    """No configured model of that name."""

    code = "model_not_found"  # OpenAI's code for it
    status = 404


@router.get("/v1/models")
async def read_models(
    request: Request, settings: SettingsDep, manifest: ManifestDep, readiness: ReadinessDep
) -> ModelListPublic:
    """List every declared model with its task and serving state (as the deployments
    last reported it, at most a few seconds old)."""
    models = _states(settings, manifest, readiness)
    created = int(request.app.state.started_at)
    return ModelListPublic(
        data=[_openai(model, created) for model in models if model.state != "not_configured"],
        default_model=settings.default_model,
        default_denoise_model=settings.default_denoise_model,
        default_face_model=settings.default_face_model,
        default_face_detector=settings.default_face_detector,
        models=models,
    )


@router.get("/v1/models/{model_id}", responses=errors(404))
async def read_model(
    model_id: str, request: Request, settings: SettingsDep, manifest: ManifestDep,
    readiness: ReadinessDep,
) -> OpenAIModelStatePublic:  # fmt: skip
    """One configured model, in OpenAI's shape (``client.models.retrieve``) with its
    serving state; a model not served here is a 404."""
    for model in _states(settings, manifest, readiness):
        if model.name == model_id and model.state != "not_configured":
            entry = _openai(model, int(request.app.state.started_at))
            return OpenAIModelStatePublic(**entry.model_dump(), state=model.state,
                                          detail=model.detail)  # fmt: skip
    raise ModelNotFound(f"model '{model_id}' is not served here; GET /v1/models lists them",
                        param="model")  # fmt: skip


def _states(
    settings: Settings, manifest: Manifest, readiness: Readiness | None
) -> list[ModelPublic]:
    readiness = readiness or {}
    return [_public(spec, settings, readiness.get(DEPLOYMENT_OF_TASK[spec.task]))
            for spec in manifest.models.values()]  # fmt: skip


def _openai(model: ModelPublic, created: int) -> OpenAIModelPublic:
    return OpenAIModelPublic(id=model.name, created=created, task=model.task)


def _public(
    spec: ModelSpec, settings: Settings, deployment: DeploymentReadiness | None
) -> ModelPublic:
    """A spec with its state: not configured, unknown (deployment down), loaded,
    unloaded (resting: loads on use), missing."""
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
    if spec.name in deployment.resting:
        why = "unloaded at run time (an operator, or the low memory mode); loads on use"
        return ModelPublic(**base, state="unloaded", detail=why)
    return ModelPublic(**base, state="missing", detail=deployment.missing.get(spec.name))
