"""Open the object store that ``settings.storage_url`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.config import Settings
from services.errors import InvalidParameter
from services.storage.base import Area, ObjectStore
from services.storage.files import FileObjectStore
from services.storage.s3 import S3ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    """file://DIR -> FileObjectStore; s3://[PREFIX] -> S3ObjectStore on the set buckets."""
    scheme, _, rest = settings.storage_url.partition("://")
    if scheme == "file" and rest:
        return FileObjectStore(Path(rest).expanduser())
    if scheme == "s3":
        buckets: dict[Area, str] = {
            "inputs": settings.s3_inputs_bucket,
            "outputs": settings.s3_outputs_bucket,
            "models": settings.s3_models_bucket,
        }
        return S3ObjectStore(s3_client(settings), buckets, rest)
    raise InvalidParameter(
        f"storage_url must be file://DIR or s3://[PREFIX], not {settings.storage_url!r}"
    )


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint and credentials."""
    return S3ObjectStore.connect(
        {}, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
        access_key_id=_secret(settings.s3_access_key_id),
        secret_access_key=_secret(settings.s3_secret_access_key),
    ).client  # fmt: skip


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
