"""file:// store: atomic writes, keys that cannot escape, the retention janitor."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from services.config import Settings
from services.errors import InvalidParameter
from services.storage.base import ObjectNotFound
from services.storage.factory import open_store
from services.storage.files import FileObjectStore


def test_round_trip_and_delete(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    store.put("outputs", "jobs/abc/0001.png", b"png-bytes", "image/png")
    assert store.exists("outputs", "jobs/abc/0001.png")
    assert store.get("outputs", "jobs/abc/0001.png") == b"png-bytes"
    assert store.url("outputs", "jobs/abc/0001.png", 60) is None
    assert not list(tmp_path.rglob(".partial-*"))
    store.delete("outputs", "jobs/abc/0001.png")
    with pytest.raises(ObjectNotFound):
        store.get("outputs", "jobs/abc/0001.png")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/abs", "a/../../b", "a//b", "", "a\\b", ".hidden"]
)
def test_keys_cannot_escape(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid object key"):
        FileObjectStore(tmp_path).put("inputs", key, b"x", "text/plain")


def test_janitor_expires_inputs_and_outputs_but_not_models(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    old = time.time() - 25 * 3600
    for area in ("inputs", "outputs", "models"):
        store.put(area, "old.bin", b"o", "application/octet-stream")  # type: ignore[arg-type]
        os.utime(store.path(area, "old.bin"), (old, old))  # type: ignore[arg-type]
        store.put(area, "new.bin", b"n", "application/octet-stream")  # type: ignore[arg-type]
    store.apply_retention(hours=24)
    assert not store.exists("inputs", "old.bin") and not store.exists("outputs", "old.bin")
    assert store.exists("models", "old.bin")
    assert all(store.exists(a, "new.bin") for a in ("inputs", "outputs", "models"))  # type: ignore[arg-type]


def test_open_store_from_settings(tmp_path: Path) -> None:
    store = open_store(Settings(storage_url=f"file://{tmp_path}"))
    assert isinstance(store, FileObjectStore) and store.root == tmp_path
    with pytest.raises(InvalidParameter, match="storage_url"):
        open_store(Settings(storage_url="ftp://nope"))
