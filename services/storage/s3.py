"""s3:// object store through boto3: AWS S3, MinIO or any S3-compatible endpoint.

Each area is a bucket. Retention is an S3 lifecycle rule put at start-up (objects in
the inputs and outputs buckets expire after N days, rounded up, and incomplete
multipart uploads are aborted after one day); results are handed out as presigned GET
URLs whose lifetime is capped at S3's 7-day maximum.
"""

from __future__ import annotations

import math
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from services.errors import InvalidParameter
from services.storage.base import EXPIRING, Area, ObjectNotFound, check_key

MAX_PRESIGN_S = 7 * 24 * 3600


class S3ObjectStore:
    """Objects in ``buckets[area]`` under an optional key prefix."""

    def __init__(self, client: Any, buckets: dict[Area, str], prefix: str = "") -> None:
        self.client = client
        self.buckets = buckets
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @classmethod
    def connect(
        cls,
        buckets: dict[Area, str],
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> S3ObjectStore:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(signature_version="s3v4", retries={"mode": "standard"}),
        )
        return cls(client, buckets, prefix)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, area: Area, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.buckets[area], Key=self._key(key), Body=data, ContentType=content_type
        )

    def get(self, area: Area, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.buckets[area], Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"no object {area}/{key}") from None
            raise
        return bytes(response["Body"].read())

    def exists(self, area: Area, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.buckets[area], Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        return True

    def delete(self, area: Area, key: str) -> None:
        self.client.delete_object(Bucket=self.buckets[area], Key=self._key(key))

    def url(self, area: Area, key: str, ttl_s: int) -> str | None:
        """A presigned GET, valid for ``ttl_s`` (at most 7 days)."""
        params = {"Bucket": self.buckets[area], "Key": self._key(key)}
        expires = max(1, min(ttl_s, MAX_PRESIGN_S))
        return str(
            self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
        )

    def input_key(self, uri: str) -> str:
        """The inputs-area key that ``s3://<inputs bucket>/<prefix><key>`` names; any other
        bucket or a key outside this store's prefix is refused."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or bucket != self.buckets["inputs"]:
            raise InvalidParameter(
                f"{uri}: s3:// inputs must be in the inputs bucket, s3://{self.buckets['inputs']}/"
            )
        if not key.startswith(self.prefix):
            raise InvalidParameter(f"{uri}: s3:// inputs must be under the prefix {self.prefix!r}")
        return check_key(key.removeprefix(self.prefix))

    def apply_retention(self, hours: int) -> None:
        """Put the expiry and abort-incomplete-upload rule for this prefix on the expiring
        buckets, keeping every other rule (other prefixes, the operator's own)."""
        days = max(1, math.ceil(hours / 24))
        rule_id = f"pixserve-expire:{self.prefix or '*'}"
        rule = {
            "ID": rule_id,
            "Filter": {"Prefix": self.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for area in EXPIRING:
            bucket = self.buckets[area]
            others = [r for r in self._lifecycle_rules(bucket) if r.get("ID") != rule_id]
            self.client.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )

    def _lifecycle_rules(self, bucket: str) -> list[dict[str, Any]]:
        try:
            answer = self.client.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise
        return list(answer.get("Rules", []))
