"""``/v1/admin/models``: which models every replica holds (memory, last use), and
loading or unloading one on every replica of its deployment, without a redeploy;
``/v1/admin/deployments/{name}/memory-mode``: a deployment's memory mode, at run time.

The command travels over the control channel (services/admin/control.py); each
replica answers with its models and its process's memory before and after, so an
unload shows what it gave back.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from services.admin.control import ModelCommand, ReplicaReport
from services.api.deps import BackendDep, ManifestDep, SettingsDep, require_admin, strict_body
from services.api.routes.models import ModelNotFound
from services.config import MemoryMode, Settings
from services.errors import Conflict, InvalidParameter, ServiceUnavailable
from services.jobs.service import JobService
from services.models.catalog import (
    added_spec,
    adopt,
    check_upload,
    inspect_weights,
    new_entry,
    record,
)
from services.models.manifest import Manifest, ModelSpec
from services.models.store import sha256_file
from services.platform import PlatformBackend, ReadinessCache
from services.registry import (
    CONTROLLED_DEPLOYMENTS,
    DEPLOYMENT_OF_TASK,
    MODEL_DEPLOYMENTS,
    deployments_in_use,
)

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin), Depends(strict_body)])
STATUS_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0  # a large model from a cold disk
ModelName = Annotated[str, PathParam(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class DeploymentModelsPublic(BaseModel):
    """One deployment's replicas as they answered."""

    deployment: str
    replicas: list[ReplicaReport]
    unanswered: int = Field(description="Replicas that heard the command but did not answer.")


class ModelFleetPublic(BaseModel):
    deployments: list[DeploymentModelsPublic]


class MemoryModeBody(BaseModel):
    """A deployment's new memory mode; null goes back to its user_config or setting."""

    model_config = {"extra": "forbid"}

    mode: MemoryMode | None


class ModelActionPublic(BaseModel):
    """What a load or unload did on each replica of the model's deployment."""

    model: str
    action: Literal["load", "unload"]
    deployment: str
    replicas: list[ReplicaReport]
    freed_bytes: int = Field(description="Resident memory the replicas gave back (unload).")


@router.get("/v1/admin/models")
async def read_model_fleet(settings: SettingsDep, backend: BackendDep) -> ModelFleetPublic:
    """Every replica of every model deployment: each configured model loaded or not, its
    memory (parameters and buffers), last use and load time; the process's memory."""
    running = [name for name in MODEL_DEPLOYMENTS if name in deployments_in_use(settings)]
    answers = await asyncio.gather(*(
        _command(backend, name, ModelCommand(action="status"), STATUS_TIMEOUT_S)
        for name in running
    ))  # fmt: skip
    return ModelFleetPublic(deployments=list(answers))


@router.post("/v1/admin/models/{name}/load")
async def load_model(
    name: ModelName, request: Request, settings: SettingsDep, manifest: ManifestDep,
    backend: BackendDep,
) -> ModelActionPublic:  # fmt: skip
    """Load ``name`` on every replica of its deployment now (a warm-up after an unload)."""
    return await _act(name, "load", settings, manifest, backend, request)


@router.post("/v1/admin/models/{name}/unload")
async def unload_model(
    name: ModelName, request: Request, settings: SettingsDep, manifest: ManifestDep,
    backend: BackendDep,
) -> ModelActionPublic:  # fmt: skip
    """Free ``name``'s memory on every replica of its deployment (CUDA cache emptied);
    it stays served and loads again on its next request."""
    return await _act(name, "unload", settings, manifest, backend, request)


@router.put("/v1/admin/deployments/{deployment}/memory-mode")
async def set_memory_mode(
    deployment: Annotated[str, PathParam(max_length=64)], body: MemoryModeBody,
    settings: SettingsDep, backend: BackendDep,
) -> DeploymentModelsPublic:  # fmt: skip
    """low keeps little resident (idle models unloaded after ``idle_unload_s``, one tile
    a pass, diffusion offloaded, sliced and tiled); high loads everything (compiled on
    CUDA). Every replica changes now; replicas started later take it too."""
    if deployment not in MODEL_DEPLOYMENTS:
        raise InvalidParameter(f"'{deployment}' is not a model deployment: "
                               f"{', '.join(MODEL_DEPLOYMENTS)}", param="deployment")  # fmt: skip
    if deployment not in deployments_in_use(settings):
        raise Conflict(f"the {deployment} deployment runs no replica here (nothing is "
                       "configured for it)", param="deployment")  # fmt: skip
    return await _command(backend, deployment, ModelCommand(action="memory_mode", mode=body.mode),
                          LOAD_TIMEOUT_S, answered=True)  # fmt: skip


async def _act(
    name: str, action: Literal["load", "unload"], settings: Settings, manifest: Manifest,
    backend: PlatformBackend, request: Request,
) -> ModelActionPublic:  # fmt: skip
    spec = manifest.models.get(name)
    if spec is None or name not in settings.configured(spec.task):
        raise ModelNotFound(f"model '{name}' is not served here; GET /v1/admin/models lists "
                            "the served ones", param="name")  # fmt: skip
    deployment = DEPLOYMENT_OF_TASK[spec.task]
    if deployment not in CONTROLLED_DEPLOYMENTS:
        raise Conflict(f"'{name}' is a {deployment} checkpoint: those load on first use and "
                       "the least recently used is evicted (Serve's model multiplexing)",
                       param="name")  # fmt: skip
    answer = await _command(backend, deployment, ModelCommand(action=action, model=name),
                            LOAD_TIMEOUT_S, answered=True)  # fmt: skip
    await _refresh_readiness(request)
    freed = sum(max(0, (r.rss_before or r.rss_bytes) - r.rss_bytes) for r in answer.replicas)
    return ModelActionPublic(model=name, action=action, deployment=deployment,
                             replicas=answer.replicas,
                             freed_bytes=freed if action == "unload" else 0)  # fmt: skip


async def _command(
    backend: PlatformBackend, deployment: str, command: ModelCommand, timeout_s: float,
    answered: bool = False,
) -> DeploymentModelsPublic:  # fmt: skip
    """``command`` to every replica of ``deployment``; ``answered``: a 503 when none did
    (a retry may find them up)."""
    heard, reports = await backend.control(deployment, command, timeout_s)
    if answered and not reports:
        raise ServiceUnavailable(f"no {deployment} replica answered on the control channel")
    reports.sort(key=lambda report: report.replica)
    return DeploymentModelsPublic(deployment=deployment, replicas=reports,
                                  unanswered=heard - len(reports))  # fmt: skip


class AddedPublic(BaseModel):
    """A model added at run time: its manifest entry (with the weights' sha256) and what
    each replica of its deployment did with it."""

    model: ModelSpec
    sha256: str
    size_bytes: int
    deployment: str
    replicas: list[ReplicaReport]


@router.post("/v1/admin/models", status_code=201)
async def add_model(
    request: Request,
    settings: SettingsDep,
    manifest: ManifestDep,
    backend: BackendDep,
    file: Annotated[UploadFile, File(description="The weights: .pth or .safetensors.")],
    name: Annotated[str, Form(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
    task: Annotated[Literal["upscale", "denoise"], Form()] = "upscale",
    license_name: Annotated[str, Form(alias="license", max_length=100)] = "unknown",
    description: Annotated[str, Form(max_length=500)] = "",
) -> AddedPublic:
    """Add a model without a redeploy: its architecture and scale are read from the
    weights (spandrel), its sha256 recorded in the shared extra manifest, the file put
    in the object store; every replica of its deployment fetches, checks and loads it,
    and requests may name it at once."""
    jobs: JobService | None = request.app.state.jobs
    if jobs is None:
        raise ServiceUnavailable("adding a model needs the job store (Redis) and object store")
    suffix = check_upload(name, file.filename or "", manifest)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}{suffix}"
        await asyncio.to_thread(_save, file, path)
        digest, size = await asyncio.to_thread(sha256_file, path), path.stat().st_size
        architecture, scale = await asyncio.to_thread(inspect_weights, path, task)
        spec = added_spec(name, task, architecture, scale, digest, suffix, license_name,
                          description)  # fmt: skip
        entry = new_entry(spec, size)
        await asyncio.to_thread(jobs.objects.put, "models", entry.object_key, path.read_bytes(),
                                "application/octet-stream")  # fmt: skip
    await record(jobs.store.redis, entry)
    adopt([entry], manifest, settings)
    backend.adopt(spec)
    deployment = DEPLOYMENT_OF_TASK[task]
    answer = await _command(backend, deployment, ModelCommand(action="adopt", model=name),
                            LOAD_TIMEOUT_S)  # fmt: skip
    await _refresh_readiness(request)
    return AddedPublic(model=spec, sha256=digest, size_bytes=size, deployment=deployment,
                       replicas=answer.replicas)  # fmt: skip


def _save(upload: UploadFile, path: Path) -> None:
    """The upload (spooled by Starlette) into ``path``, for spandrel, which reads files."""
    upload.file.seek(0)
    with path.open("wb") as target:
        shutil.copyfileobj(upload.file, target, 1 << 20)


async def _refresh_readiness(request: Request) -> None:
    cache: ReadinessCache | None = getattr(request.app.state, "readiness", None)
    if cache is not None:  # /v1/models and /readyz show the change at once
        await cache.refresh()
