"""Models an operator adds at run time: an uploaded ``.pth`` or ``.safetensors`` becomes
servable without a redeploy.

The weights go to the object store's ``models`` area (every replica on every node can
read it); the model's manifest entry, with the file's sha256, goes into the shared
extra manifest, a Redis hash every process reads (``ADDED_KEY``). A process adopts an
entry by adding it to its manifest and to the setting that lists its task's models;
a model replica also copies the file into its local model store (checked against the
sha256) and loads it. The ingress adopts at once and every few seconds; the
Dispatcher when a job names a model it does not know yet; the deployment's replicas
on the add command and when they start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.config import MODEL_SETTINGS, Settings
from services.errors import InvalidParameter
from services.models.manifest import Manifest, ModelSpec, WeightSource
from services.models.store import ModelStore, sha256_file
from services.storage.base import ObjectStore

logger = logging.getLogger(__name__)
ADDED_KEY = "pixserve:models:added"  # hash: model name -> AddedModel JSON
ADDED_DIR = "added"  # the folder of added weights, in the object store and model stores
ADDABLE_TASKS = ("upscale", "denoise")  # the tile engines load any spandrel model
SUFFIXES = (".pth", ".safetensors")
# spandrel's architecture ids -> the manifest's names; any other is "Spandrel"
ARCHITECTURES = {"ESRGAN": "RRDBNet", "Compact": "SRVGGNetCompact", "SCUNet": "SCUNet",
                 "DnCNN": "DnCNN", "RealCUGAN": "RealCUGAN"}  # fmt: skip


class AddedModel(BaseModel):
    """One added model: its manifest entry and where its weights are."""

    spec: ModelSpec
    object_key: str
    size_bytes: int
    added_at: float


def inspect_weights(path: Path, task: str) -> tuple[str, int]:
    """The manifest architecture and scale of a weight file, read by spandrel on the
    CPU (pickles through its restricted unpickler); refused when it is not an RGB image
    model of ``task`` (an upscaler enlarges, a denoiser keeps the size)."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except Exception as exc:  # spandrel raises many kinds for a file it cannot read
        raise InvalidParameter(f"file: not a model spandrel can load ({type(exc).__name__}: "
                               f"{str(exc)[:200]})", param="file") from None  # fmt: skip
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InvalidParameter("file: not an image-to-image model", param="file")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise InvalidParameter(f"file: not an RGB model ({descriptor.input_channels} channels "
                               f"in, {descriptor.output_channels} out)", param="file")  # fmt: skip
    scale = int(descriptor.scale)
    if (task == "denoise") != (scale == 1):
        kind = "a denoise model keeps the size (x1)" if task == "denoise" else (
            "an upscale model enlarges (x2 or more)")  # fmt: skip
        raise InvalidParameter(f"file: a x{scale} model; {kind}", param="task")
    return ARCHITECTURES.get(descriptor.architecture.id, "Spandrel"), scale


def added_spec(name: str, task: str, architecture: str, scale: int, digest: str, suffix: str,
               license_name: str, description: str) -> ModelSpec:  # fmt: skip
    """The manifest entry of an added model: its file in the store's ``added`` folder,
    pinned to its sha256."""
    source = WeightSource(kind="local", filename=f"{ADDED_DIR}/{name}{suffix}", sha256=digest)
    return ModelSpec.model_validate({
        "name": name, "task": task, "architecture": architecture, "scale": scale,
        "license": license_name, "description": description or "added at run time",
        "sources": [source.model_dump()],
    })  # fmt: skip


def check_upload(name: str, filename: str, manifest: Manifest) -> str:
    """The upload's suffix; a name already declared is refused (names are stable)."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidParameter(f"file: weights are {' or '.join(SUFFIXES)}, not "
                               f"'{suffix or filename}'", param="file")  # fmt: skip
    if name in manifest.models:
        raise InvalidParameter(f"name: '{name}' is already a model; choose another name",
                               param="name")  # fmt: skip
    return suffix


async def record(client: Redis, added: AddedModel) -> None:
    await client.hset(ADDED_KEY, added.spec.name, added.model_dump_json())


async def added_models(client: Redis) -> list[AddedModel]:
    raw: dict[Any, Any] = await client.hgetall(ADDED_KEY)
    return _parse(raw)


def added_models_sync(client: redis.Redis) -> list[AddedModel]:
    raw: Any = client.hgetall(ADDED_KEY)
    return _parse(raw)


def adopt(added: list[AddedModel], manifest: Manifest, settings: Settings) -> list[str]:
    """Make ``added`` known to this process: manifest entries and the task's model
    setting; the names it had not known."""
    fresh = []
    for entry in added:
        spec = entry.spec
        listed: list[str] = getattr(settings, MODEL_SETTINGS[spec.task])
        if spec.name not in manifest.models or spec.name not in listed:
            manifest.models[spec.name] = spec
            if spec.name not in listed:
                listed.append(spec.name)
            fresh.append(spec.name)
    return fresh


async def adopt_added(
    client: Redis, manifest: Manifest, settings: Settings, route: Callable[[ModelSpec], None]
) -> list[str]:
    """Adopt what was added since the last look (``route``: the backend's ``adopt``)."""
    fresh = adopt(await added_models(client), manifest, settings)
    for name in fresh:
        route(manifest.models[name])
    return fresh


async def keep_adopting(
    client: Redis, manifest: Manifest, settings: Settings, route: Callable[[ModelSpec], None],
    period_s: float = 5.0,
) -> None:  # fmt: skip
    """An ingress's loop: models another ingress replica added become servable here
    within ``period_s``."""
    while True:
        try:
            await adopt_added(client, manifest, settings, route)
        except RedisError as exc:  # the job store's outage shows elsewhere
            logger.debug("added models not read: %s", exc)
        await asyncio.sleep(period_s)


def adopt_into_store(
    client: redis.Redis, objects: ObjectStore, store: ModelStore, listed: list[str],
    tasks: tuple[str, ...],
) -> list[str]:  # fmt: skip
    """A model replica's adoption: the added models of its ``tasks`` into its store's
    manifest and its model list (``listed``), their files fetched and checked; the
    names it had not listed. The caller loads them."""
    fresh = []
    for entry in added_models_sync(client):
        if entry.spec.task not in tasks or entry.spec.name in listed:
            continue  # not this replica's, or adopted before (fetched and checked then)
        fetch(entry, objects, store)
        store.manifest.models[entry.spec.name] = entry.spec
        listed.append(entry.spec.name)
        fresh.append(entry.spec.name)
    return fresh


def fetch(entry: AddedModel, objects: ObjectStore, store: ModelStore) -> Path:
    """The added model's file in the local model store, copied from the object store
    unless already there with its sha256."""
    path = store.path_for(entry.spec.sources[0])
    if path.is_file() and sha256_file(path) == entry.spec.sources[0].sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(objects.get("models", entry.object_key))
    os.replace(partial, path)
    store.verify(entry.spec.sources[0], path)
    return path


def new_entry(spec: ModelSpec, size: int) -> AddedModel:
    return AddedModel(spec=spec, object_key=spec.sources[0].filename, size_bytes=size,
                      added_at=time.time())  # fmt: skip


def _parse(raw: dict[Any, Any]) -> list[AddedModel]:
    entries = []
    for value in raw.values():
        try:
            entries.append(AddedModel.model_validate_json(value))
        except ValueError:
            logger.warning("ignored an unreadable added-model entry")
    return sorted(entries, key=lambda entry: entry.added_at)
