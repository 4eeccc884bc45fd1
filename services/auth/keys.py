"""API keys: ``pxs_<prefix>_<secret>``, shown once, stored only as a sha256 in Redis.

The prefix identifies a key in listings and logs without revealing it; the secret has
256 bits of entropy, so a plain sha256 is a safe verifier. Lookups compare digests in
constant time. Each key also owns a webhook signing secret (``whsec_...``): the
platform must sign with it, so unlike the key it is kept readable, and it can be
rotated without replacing the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from services.errors import InvalidParameter, Unauthorized
from services.redis_text import as_text
from services.webhooks.signing import generate_secret

TOKEN_PREFIX = "pxs"
_INDEX = "pixserve:apikeys"


@dataclass(frozen=True)
class ApiKey:
    """A key's public record: never the secret, never its hash."""

    prefix: str
    name: str
    created_at: float
    revoked_at: float | None = None
    rate_per_minute: int | None = None
    admin: bool = False  # may use the operator routes (/v1/admin, the dashboard's data)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _record_key(prefix: str) -> str:
    return f"pixserve:apikey:{prefix}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyStore:
    """Creates, lists, revokes and verifies API keys in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(
        self, name: str, rate_per_minute: int | None = None, admin: bool = False
    ) -> tuple[str, ApiKey]:
        """A new key; the returned token is the only time the secret exists in clear."""
        if not name.strip():
            raise InvalidParameter("a key needs a name")
        prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}_{prefix}_{secret}"
        key = ApiKey(prefix, name, time.time(), None, rate_per_minute, admin)
        fields: dict[FieldT, EncodableT] = {
            "name": name,
            "hash": _digest(token),
            "created_at": str(key.created_at),
            "webhook_secret": generate_secret(),
        }
        if rate_per_minute:
            fields["rate_per_minute"] = str(rate_per_minute)
        if admin:
            fields["admin"] = "1"
        await self.redis.hset(_record_key(prefix), mapping=fields)
        await self.redis.sadd(_INDEX, prefix)
        return token, key

    async def list(self) -> list[ApiKey]:
        prefixes = sorted(await self.redis.smembers(_INDEX))
        keys = [await self.get(as_text(prefix)) for prefix in prefixes]
        return [key for key in keys if key is not None]

    async def get(self, prefix: str) -> ApiKey | None:
        fields = await self.redis.hgetall(_record_key(prefix))
        if not fields:
            return None
        data = {as_text(k): as_text(v) for k, v in fields.items()}
        revoked = data.get("revoked_at")
        rate = data.get("rate_per_minute")
        return ApiKey(
            prefix,
            data["name"],
            float(data["created_at"]),
            float(revoked) if revoked else None,
            int(rate) if rate else None,
            data.get("admin") == "1",
        )

    async def revoke(self, prefix: str) -> ApiKey:
        """Mark a key revoked; it fails authentication from the next request on."""
        if await self.get(prefix) is None:
            raise InvalidParameter(f"no API key with prefix '{prefix}'")
        await self.redis.hset(_record_key(prefix), "revoked_at", str(time.time()))
        key = await self.get(prefix)
        assert key is not None
        return key

    async def webhook_secret(self, prefix: str) -> str | None:
        """The secret that signs webhooks of this key's jobs (None: no such key)."""
        secret = await self.redis.hget(_record_key(prefix), "webhook_secret")
        return as_text(secret) if secret is not None else None

    async def rotate_webhook_secret(self, prefix: str) -> str:
        """A new webhook secret for the key; deliveries from now on are signed with it."""
        if await self.get(prefix) is None:
            raise InvalidParameter(f"no API key with prefix '{prefix}'")
        secret = generate_secret()
        await self.redis.hset(_record_key(prefix), "webhook_secret", secret)
        return secret

    async def authenticate(self, token: str) -> ApiKey:
        """The active key ``token`` belongs to, or ``Unauthorized``."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise Unauthorized("malformed API key; expected pxs_<prefix>_<secret>")
        stored = await self.redis.hget(_record_key(parts[1]), "hash")
        if stored is None or not hmac.compare_digest(as_text(stored), _digest(token)):
            raise Unauthorized("unknown API key")
        key = await self.get(parts[1])
        if key is None or not key.active:
            raise Unauthorized(f"API key {parts[1]} has been revoked")
        return key
