"""Models added at run time, without a model server: the weights read by spandrel
(architecture and scale, an image model of the task), the manifest entry pinned to the
file's sha256, adoption into a manifest and its setting, and a replica's copy fetched
from the object store and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from services.config import Settings
from services.errors import ChecksumMismatch, InvalidParameter
from services.models.catalog import (
    added_spec,
    adopt,
    check_upload,
    fetch,
    inspect_weights,
    new_entry,
)
from services.models.manifest import load_manifest
from services.models.store import ModelStore, sha256_file
from services.storage.files import FileObjectStore
from tests.utils.tiny_models import TINY_COMPACT, TINY_DNCNN, TINY_RRDB

pytestmark = pytest.mark.timeout(60)


def test_the_weights_say_what_they_are(tiny_store: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tiny_store
    assert inspect_weights(root / f"{TINY_RRDB}.pth", "upscale") == ("RRDBNet", 4)
    assert inspect_weights(root / f"{TINY_COMPACT}.pth", "upscale") == ("SRVGGNetCompact", 2)
    assert inspect_weights(root / f"{TINY_DNCNN}.pth", "denoise") == ("DnCNN", 1)
    state = torch.load(root / f"{TINY_RRDB}.pth", weights_only=True)
    save_file(state, tmp_path / "rrdb.safetensors")  # the same weights as safetensors
    assert inspect_weights(tmp_path / "rrdb.safetensors", "upscale") == ("RRDBNet", 4)
    with pytest.raises(InvalidParameter, match="a denoise model keeps the size") as wrong:
        inspect_weights(root / f"{TINY_RRDB}.pth", "denoise")
    assert wrong.value.param == "task"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidParameter, match="not a model spandrel can load"):
        inspect_weights(tmp_path / "junk.pth", "upscale")


def test_uploads_are_checked_by_name_and_suffix() -> None:
    manifest = load_manifest()
    assert check_upload("mine", "weights.SAFETENSORS", manifest) == ".safetensors"
    with pytest.raises(InvalidParameter, match=r"\.pth or \.safetensors"):
        check_upload("mine", "weights.ckpt", manifest)
    with pytest.raises(InvalidParameter, match="already a model"):
        check_upload("x4plus", "x4plus.pth", manifest)


def test_adoption_and_a_replicas_checked_copy(
    tiny_store: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = tiny_store
    weights = root / f"{TINY_RRDB}.pth"
    spec = added_spec("my-x4", "upscale", "RRDBNet", 4, sha256_file(weights), ".pth", "MIT", "")
    entry = new_entry(spec, weights.stat().st_size)
    assert spec.sources[0].filename == "added/my-x4.pth" and entry.object_key == "added/my-x4.pth"
    manifest, settings = load_manifest(), Settings(models=["x4plus"])
    assert adopt([entry], manifest, settings) == ["my-x4"]
    assert settings.configured("upscale") == ["x4plus", "my-x4"] and "my-x4" in manifest.models
    assert adopt([entry], manifest, settings) == []  # once
    objects = FileObjectStore(tmp_path / "objects")
    objects.put("models", entry.object_key, weights.read_bytes(), "application/octet-stream")
    store = ModelStore(tmp_path / "replica-store", manifest)
    path = fetch(entry, objects, store)
    assert path == store.locate("my-x4") and sha256_file(path) == spec.sources[0].sha256
    objects.put("models", entry.object_key, b"tampered", "application/octet-stream")
    path.unlink()
    with pytest.raises(ChecksumMismatch):
        fetch(entry, objects, store)
