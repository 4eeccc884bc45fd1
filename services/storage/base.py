"""The object store: one interface over file:// and s3://, with inputs, outputs and
models kept apart.

Keys are relative, slash-separated paths ("jobs/<id>/0001.png"); each kind of object
lives in its own area (a bucket on S3, a directory on file://) so retention can differ.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol

from services.errors import InvalidParameter, PixserveError

Area = Literal["inputs", "outputs", "models"]
AREAS: tuple[Area, ...] = ("inputs", "outputs", "models")
EXPIRING: tuple[Area, ...] = ("inputs", "outputs")  # models are never expired
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")


class ObjectNotFound(PixserveError):
    """The key does not exist in its area."""

    code = "not_found"
    status = 404


def check_key(key: str) -> str:
    """Refuse keys that could escape their area (``..``, absolute paths, odd characters)."""
    if len(key) > 512 or not _SAFE_KEY.match(key) or ".." in key.split("/"):
        raise InvalidParameter(f"invalid object key {key!r}")
    return key


class ObjectStore(Protocol):
    """Byte objects by (area, key); ``url`` is a presigned GET where the backend has one."""

    def put(self, area: Area, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, area: Area, key: str) -> bytes: ...

    def exists(self, area: Area, key: str) -> bool: ...

    def delete(self, area: Area, key: str) -> None: ...

    def url(self, area: Area, key: str, ttl_s: int) -> str | None: ...

    def apply_retention(self, hours: int) -> None: ...

    def input_key(self, uri: str) -> str: ...
