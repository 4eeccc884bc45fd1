"""file:// object store: the embedded default for single-machine runs.

Writes go to a temporary file renamed into place, so a reader never sees half an
object; retention is a janitor pass that deletes inputs and outputs older than the
limit (models are never expired).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from services.errors import InvalidParameter
from services.storage.base import EXPIRING, Area, ObjectNotFound, check_key


class FileObjectStore:
    """Objects under ``root/<area>/<key>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, area: Area, key: str) -> Path:
        return self.root / area / check_key(key)

    def put(self, area: Area, key: str, data: bytes, content_type: str) -> None:
        target = self.path(area, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)

    def get(self, area: Area, key: str) -> bytes:
        try:
            return self.path(area, key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {area}/{key}") from None

    def exists(self, area: Area, key: str) -> bool:
        return self.path(area, key).is_file()

    def delete(self, area: Area, key: str) -> None:
        self.path(area, key).unlink(missing_ok=True)

    def url(self, area: Area, key: str, ttl_s: int) -> str | None:
        """No presigned URLs on file://: the API streams the object instead."""
        return None

    def apply_retention(self, hours: int) -> None:
        """The janitor: delete expiring objects last modified more than ``hours`` ago."""
        cutoff = time.time() - hours * 3600
        for area in EXPIRING:
            for path in (self.root / area).rglob("*"):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)

    def input_key(self, uri: str) -> str:
        """file:// stores have no buckets, so ``s3://`` inputs cannot name anything here."""
        raise InvalidParameter(
            f"{uri}: s3:// inputs need an s3:// storage_url; this server stores objects on "
            "its own disk (upload the image or give an https URL)"
        )
