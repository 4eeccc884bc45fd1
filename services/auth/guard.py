"""The API's gate: a valid, unrevoked key with tokens left, or a 401/429 that says why."""

from __future__ import annotations

from redis.exceptions import RedisError

from services.auth.keys import ApiKey, ApiKeyStore
from services.auth.ratelimit import RateLimiter
from services.config import Settings
from services.errors import ServiceUnavailable, Unauthorized
from services.redis_client import connect_redis


class KeyGuard:
    """Authenticates the bearer key, then charges its rate limit."""

    def __init__(self, store: ApiKeyStore, limiter: RateLimiter) -> None:
        self.store = store
        self.limiter = limiter

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyGuard:
        redis = connect_redis(settings)
        limiter = RateLimiter(redis, settings.rate_limit_per_minute, settings.rate_limit_burst)
        return cls(ApiKeyStore(redis), limiter)

    async def check(self, authorization: str | None) -> ApiKey:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer pxs_...`")
        try:
            key = await self.store.authenticate(token.strip())
            await self.limiter.take(key.prefix, key.rate_per_minute)
        except RedisError as exc:
            raise ServiceUnavailable(f"the key store is unreachable: {exc}") from exc
        return key
