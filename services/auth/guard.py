"""The API's gate: a valid, unrevoked key with tokens left, or a 401/429 that says why."""

from __future__ import annotations

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from services.auth.keys import ApiKey, ApiKeyStore
from services.auth.ratelimit import RateLimiter
from services.config import Settings
from services.errors import ServiceUnavailable, Unauthorized
from services.telemetry.clients import TracedRedis

_BACKOFF = ExponentialBackoff(cap=0.5, base=0.05)
_RETRIES = 3
_RETRIED = (RedisConnectionError, RedisTimeoutError)


def connect_redis(settings: Settings) -> Redis:
    """A Redis client from settings (the password comes from its own secret setting);
    its commands are client spans inside traced requests and job items. A connection
    error is retried a few times within a second: a pooled connection that went stale
    while Redis restarted is replaced instead of failing the request; a real outage
    still answers 503 quickly."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return TracedRedis.from_url(
        settings.redis_url, password=password, retry=AsyncRetry(_BACKOFF, _RETRIES),
        retry_on_error=list(_RETRIED),
    )  # fmt: skip


def connect_redis_sync(settings: Settings) -> redis.Redis:
    """A blocking client, for background threads (the live-stats flusher)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis.from_url(
        settings.redis_url, password=password, retry=Retry(_BACKOFF, _RETRIES),
        retry_on_error=list(_RETRIED),
    )  # fmt: skip


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
