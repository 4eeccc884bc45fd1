"""Redis connections from settings, for the API, the job store and the CLI alike.

Neutral ground below the packages that use Redis (auth, jobs, cli, the deployments'
metrics): none of them owns the connection.
"""

from __future__ import annotations

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from services.config import Settings
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
