"""The model store's S3 copy against moto's S3 server: push a local store's models,
sync them into an empty store (only what is absent or changed), load from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings
from services.models.remote import RemoteModels, open_model_store
from tests.utils.tiny_models import TINY_DNCNN, TINY_RRDB, TINY_SDXL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def settings_for(root: Path, manifest: Path, endpoint: str, prefix: str) -> Settings:
    return Settings(model_store=root, extra_manifest=manifest, model_store_s3_prefix=prefix,
                    s3_endpoint_url=endpoint, s3_access_key_id="test",
                    s3_secret_access_key="test")  # type: ignore[arg-type]  # fmt: skip


def test_push_then_sync_a_file_and_a_repository(
    tiny_store: tuple[Path, Path], s3_endpoint: str, tmp_path: Path
) -> None:
    root, manifest = tiny_store
    names = [TINY_RRDB, TINY_SDXL]
    source = settings_for(root, manifest, s3_endpoint, "sync-test/v1")
    remote = RemoteModels.from_settings(source)
    assert remote is not None
    keys = remote.push(open_model_store(source.model_copy(update={"model_store_s3_prefix": None}),
                                        names), names)  # fmt: skip
    assert f"sync-test/v1/{TINY_RRDB}.pth" in keys
    assert f"sync-test/v1/{TINY_SDXL}/model_index.json" in keys

    replica = settings_for(tmp_path, manifest, s3_endpoint, "sync-test/v1")
    store = open_model_store(replica, names)  # what a replica does at start
    for name in names:
        assert store.describe(name).present
    assert store.locate(TINY_RRDB).read_bytes() == (root / f"{TINY_RRDB}.pth").read_bytes()
    unet = Path(TINY_SDXL) / "unet" / "config.json"
    assert (tmp_path / unet).read_bytes() == (root / unet).read_bytes()
    assert not store.describe(TINY_DNCNN).present  # only what was asked for

    again = RemoteModels.from_settings(replica)
    assert again is not None and again.sync(store, names) == []  # nothing changed
    (tmp_path / f"{TINY_RRDB}.pth").write_bytes(b"truncated")
    assert again.sync(store, names) == [tmp_path / f"{TINY_RRDB}.pth"]
    store.locate(TINY_RRDB)  # the pinned sha256 matches again


def test_an_unreachable_bucket_leaves_the_store_as_it_is(
    tiny_store: tuple[Path, Path], tmp_path: Path
) -> None:
    _, manifest = tiny_store
    settings = settings_for(tmp_path, manifest, "http://127.0.0.1:9", "nowhere")
    store = open_model_store(settings, [TINY_RRDB])
    assert not store.describe(TINY_RRDB).present
