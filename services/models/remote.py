"""The model store's S3 copy: ``s3://{s3_models_bucket}/{model_store_s3_prefix}/``.

Clusters keep weights in S3 (or MinIO); each replica syncs the models it serves into
its local model store at start (only files that are absent or differ in size), then
loads them from disk exactly as from a local store: the sha256 pins still apply.
``pixserve models push`` uploads what a local store holds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.config import Settings
from services.models.manifest import load_manifest
from services.models.store import ModelStore

logger = logging.getLogger(__name__)


@dataclass
class RemoteModels:
    """Objects under ``prefix`` in ``bucket``; keys mirror the local store's paths."""

    client: Any
    bucket: str
    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteModels | None:
        """The configured S3 copy, or None when models are local only."""
        if settings.model_store_s3_prefix is None:
            return None
        from services.storage.factory import s3_client

        prefix = settings.model_store_s3_prefix.strip("/")
        return cls(s3_client(settings), settings.s3_models_bucket, prefix + "/" if prefix else "")

    def sync(self, store: ModelStore, names: list[str]) -> list[Path]:
        """Download the files of ``names`` that the local store lacks or holds at another
        size; what was written, in order."""
        written = []
        for filename in _filenames(store, names):
            for key, size in self._objects(filename):
                target = store.root / key[len(self.prefix) :]
                if target.is_file() and target.stat().st_size == size:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                self.client.download_file(self.bucket, key, str(partial))
                os.replace(partial, target)
                written.append(target)
        return written

    def push(self, store: ModelStore, names: list[str]) -> list[str]:
        """Upload the local files of ``names``; the keys written."""
        keys = []
        for filename in _filenames(store, names):
            path = store.root / filename
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                key = self.prefix + file.relative_to(store.root).as_posix()
                self.client.upload_file(str(file), self.bucket, key)
                keys.append(key)
        return keys

    def _objects(self, filename: str) -> list[tuple[str, int]]:
        """The object for a file, or every object under a directory of that name."""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + filename):
            for entry in page.get("Contents", []):
                rest = entry["Key"][len(self.prefix + filename) :]
                if rest == "" or rest.startswith("/"):
                    found.append((entry["Key"], int(entry["Size"])))
        return found


def open_model_store(settings: Settings, names: list[str]) -> ModelStore:
    """The local model store, first synced from S3 for ``names`` when configured. An
    unreachable S3 is logged, not fatal: the engines then name what is missing."""
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    remote = RemoteModels.from_settings(settings)
    if remote is not None and names:
        try:
            written = remote.sync(store, names)
        except Exception as exc:  # boto3 raises many kinds; the replica must still start
            logger.warning("model sync from s3://%s/%s failed: %s", remote.bucket,
                           remote.prefix, exc)  # fmt: skip
        else:
            logger.info("synced %d model files from s3://%s/%s", len(written), remote.bucket,
                        remote.prefix)  # fmt: skip
    return store


def _filenames(store: ModelStore, names: list[str]) -> list[str]:
    return [source.filename for name in names for source in store.manifest.get(name).sources]
