"""A token bucket per API key, kept in Redis so every ingress replica shares it.

One Lua script refills by elapsed time (Redis's own clock) and takes a token
atomically; an empty bucket answers how long until the next token.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from services.errors import RateLimited

_SCRIPT = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now_ms
tokens = math.min(capacity, tokens + (now_ms - ts) * per_ms)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now_ms))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return {allowed, wait_ms}
"""


class RateLimiter:
    """Takes one token per request from ``pixserve:ratelimit:<key>``."""

    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self.redis = redis
        self.per_minute = per_minute
        self.burst = burst
        self._script = redis.register_script(_SCRIPT)

    async def take(self, key: str, per_minute: int | None = None) -> None:
        """Consume a token or raise ``RateLimited`` with a Retry-After in seconds."""
        rate = per_minute or self.per_minute
        allowed, wait_ms = await self._script(
            keys=[f"pixserve:ratelimit:{key}"], args=[self.burst, rate / 60_000.0]
        )
        if not int(allowed):
            retry = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(f"rate limit of {rate}/min reached; retry in {retry} s", retry)
