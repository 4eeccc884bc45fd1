"""s3:// store against a real S3 HTTP server (moto's standalone server): objects,
presigned GETs fetched over HTTP, lifecycle rules, prefixes, missing keys."""

from __future__ import annotations

import httpx
import pytest

from services.config import Settings
from services.storage.base import ObjectNotFound
from services.storage.factory import open_store
from services.storage.s3 import MAX_PRESIGN_S, S3ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CREDENTIALS = {"s3_access_key_id": "test", "s3_secret_access_key": "test"}


@pytest.fixture
def store(s3_endpoint: str) -> S3ObjectStore:
    settings = Settings(storage_url="s3://tenant-a", s3_endpoint_url=s3_endpoint, **CREDENTIALS)  # type: ignore[arg-type]
    opened = open_store(settings)
    assert isinstance(opened, S3ObjectStore)
    return opened


def test_round_trip_under_the_prefix(store: S3ObjectStore) -> None:
    store.put("outputs", "jobs/j1/0001.png", b"\x89PNG...", "image/png")
    assert store.exists("outputs", "jobs/j1/0001.png")
    assert store.get("outputs", "jobs/j1/0001.png") == b"\x89PNG..."
    listed = store.client.list_objects_v2(Bucket="pixserve-outputs", Prefix="tenant-a/")["Contents"]
    assert [item["Key"] for item in listed] == ["tenant-a/jobs/j1/0001.png"]
    store.delete("outputs", "jobs/j1/0001.png")
    assert not store.exists("outputs", "jobs/j1/0001.png")
    with pytest.raises(ObjectNotFound):
        store.get("outputs", "jobs/j1/0001.png")


def test_presigned_url_serves_the_object(store: S3ObjectStore) -> None:
    store.put("outputs", "jobs/j2/out.webp", b"webp-bytes", "image/webp")
    url = store.url("outputs", "jobs/j2/out.webp", ttl_s=10**9)
    assert url is not None and f"X-Amz-Expires={MAX_PRESIGN_S}" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"webp-bytes"
    assert response.headers["content-type"] == "image/webp"
    assert "X-Amz-Signature=" in url  # moto does not check signatures; S3 and MinIO do


def test_lifecycle_rules_expire_inputs_and_outputs_only(store: S3ObjectStore) -> None:
    foreign = {"ID": "operator-rule", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
               "Expiration": {"Days": 30}}  # fmt: skip
    store.client.put_bucket_lifecycle_configuration(
        Bucket="pixserve-inputs", LifecycleConfiguration={"Rules": [foreign]}
    )
    store.apply_retention(hours=30)
    store.apply_retention(hours=30)  # idempotent: one rule per prefix, not two
    for bucket in ("pixserve-inputs", "pixserve-outputs"):
        rules = store.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        (rule,) = [r for r in rules if r["Filter"] == {"Prefix": "tenant-a/"}]
        assert rule["Expiration"] == {"Days": 2} and rule["Status"] == "Enabled"
        assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    inputs = store.client.get_bucket_lifecycle_configuration(Bucket="pixserve-inputs")["Rules"]
    assert "operator-rule" in [r["ID"] for r in inputs]  # other rules are kept
    with pytest.raises(store.client.exceptions.ClientError):
        store.client.get_bucket_lifecycle_configuration(Bucket="pixserve-models")
