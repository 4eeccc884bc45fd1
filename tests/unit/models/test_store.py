"""Manifest lookups, checksum verification and the ncnn import into the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.errors import ChecksumMismatch, InvalidParameter, ModelNotReady, UnknownModel
from services.models.manifest import load_manifest
from services.models.sources import import_package, ncnn_models_dir, pull
from services.models.store import ModelStore, sha256_file
from tests.utils.tiny_models import TINY_RRDB


def test_packaged_manifest_declares_the_real_esrgan_family() -> None:
    manifest = load_manifest()
    assert {"x4plus", "x2plus", "x4plus-anime", "general-x4v3", "animevideov3"} <= set(
        manifest.models
    )
    for spec in manifest.models.values():
        assert spec.license and spec.sources
        assert all(source.sha256 for source in spec.sources if source.kind == "package")


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModel, match=r"known models: .*x4plus"):
        load_manifest().get("x5plus")


def test_locate_verifies_checksum(tiny_store: tuple[Path, Path]) -> None:
    root, manifest = tiny_store
    store = ModelStore(root, load_manifest(manifest))
    assert store.locate(TINY_RRDB) == root / f"{TINY_RRDB}.pth"
    assert store.describe(TINY_RRDB).checksum_ok is True


def test_altered_weights_are_refused(tiny_store: tuple[Path, Path], tmp_path: Path) -> None:
    root, manifest = tiny_store
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    with (copy / f"{TINY_RRDB}.pth").open("ab") as handle:
        handle.write(b"tampered")
    store = ModelStore(copy, load_manifest(manifest))
    with pytest.raises(ChecksumMismatch, match="manifest pins"):
        store.locate(TINY_RRDB)
    assert store.describe(TINY_RRDB).checksum_ok is False


def test_missing_model_names_the_command(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, load_manifest())
    with pytest.raises(ModelNotReady, match="pixserve models import x4plus"):
        store.locate("x4plus")
    with pytest.raises(ModelNotReady, match="pixserve models pull x2plus"):
        store.locate("x2plus")


def test_import_package_yields_the_pinned_file(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, load_manifest())
    path = import_package(store, "animevideov3")
    assert store.locate("animevideov3") == path
    (source,) = [s for s in store.manifest.models["animevideov3"].sources if s.kind == "package"]
    assert sha256_file(path) == source.sha256
    assert not list(tmp_path.glob("*.partial"))


def test_import_refuses_altered_ncnn_source(tmp_path: Path) -> None:
    folder = tmp_path / "ncnn"
    folder.mkdir()
    for ext in (".param", ".bin"):
        shutil.copy(ncnn_models_dir() / f"realesr-animevideov3-x4{ext}", folder)
    data = bytearray((folder / "realesr-animevideov3-x4.bin").read_bytes())
    data[100] ^= 0xFF
    (folder / "realesr-animevideov3-x4.bin").write_bytes(bytes(data))
    store = ModelStore(tmp_path / "store", load_manifest())
    with pytest.raises(ChecksumMismatch):
        import_package(store, "animevideov3", folder)
    assert not (tmp_path / "store" / "realesr-animevideov3.ncnn.safetensors").exists()


def test_import_needs_an_ncnn_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="no package source"):
        import_package(ModelStore(tmp_path, load_manifest()), "x2plus")


def test_pull_refuses_a_file_with_the_wrong_checksum(tmp_path: Path) -> None:
    """A local file:// URL stands for the release server; the digest check is real."""
    payload = tmp_path / "weights.pth"
    payload.write_bytes(b"not the official weights")
    extra = tmp_path / "manifest.json"
    extra.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "served",
                        "architecture": "RRDBNet",
                        "scale": 4,
                        "license": "test",
                        "sources": [
                            {
                                "kind": "url",
                                "filename": "served.pth",
                                "url": payload.as_uri(),
                                "sha256": "0" * 64,
                            }
                        ],
                    }
                ]
            }
        )
    )
    store = ModelStore(tmp_path / "store", load_manifest(extra))
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        pull(store, "served")
    assert not any((tmp_path / "store").iterdir())
    good = sha256_file(payload)
    spec = store.manifest.models["served"]
    spec.sources[0].sha256 = None
    assert pull(store, "served", sha256=good).read_bytes() == payload.read_bytes()
