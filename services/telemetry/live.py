"""Live numbers for the operator dashboard, kept in Redis for the last hour and a half.

Prometheus is where metrics go for the long run; the dashboard must work without it.
So every process also records the platform's metrics into a buffer (``LiveStats``,
fed through ``LiveFactory``) that a daemon thread adds every few seconds into one
Redis hash per minute: counters and histogram buckets are summed across replicas,
gauges keep their last value. Each replica also writes a snapshot of itself (device,
GPU share and memory, ongoing requests), and the ingress the recent errors.
``LiveReader`` turns these back into per-minute series, percentiles and costs.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.redis_text import as_text
from services.telemetry.metrics import Counter, Gauge, Histogram, MetricFactory, Tags

logger = logging.getLogger(__name__)

KEEP_S = 90 * 60  # how long a minute's hash lives
REPLICAS = "pixserve:replicas"  # hash: replica id -> its latest snapshot (JSON)
ERRORS = "pixserve:errors"  # list, newest first, capped at ERRORS_KEPT
ERRORS_KEPT = 200
REPLICA_FRESH_S = 30.0  # a replica that has not written for this long is not shown
FLUSH_PERIOD_S = 5.0


def minute_key(minute: int) -> str:
    return f"pixserve:live:{minute}"


def _tags(tags: Tags | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))


def _parse_tags(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


class LiveStats:
    """One process's buffer of live numbers; thread-safe, since engines record from
    worker threads. ``start`` flushes it to Redis from a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[int, str], float] = defaultdict(float)
        self._last: dict[tuple[int, str], float] = {}
        self._errors: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def factory(self) -> LiveFactory:
        return LiveFactory(self)

    def add(self, field: str, value: float) -> None:
        with self._lock:
            self._sums[int(time.time() // 60), field] += value

    def set(self, field: str, value: float) -> None:
        with self._lock:
            self._last[int(time.time() // 60), field] = value

    def error(self, **record: Any) -> None:
        """Keep an error (route or job item, code, message, trace id) for the dashboard."""
        with self._lock:
            self._errors.append(json.dumps({"at": time.time(), **record}))

    def flush(self, client: redis.Redis, snapshot: tuple[str, dict[str, Any]] | None) -> None:
        """Write what was buffered (and this replica's snapshot) in one round trip; on a
        Redis error the numbers go back into the buffer for the next try."""
        with self._lock:
            sums, last, errors = self._sums, self._last, self._errors
            self._sums, self._last, self._errors = defaultdict(float), {}, []
        pipe = client.pipeline(transaction=False)
        for minute in {m for m, _ in sums} | {m for m, _ in last}:
            key = minute_key(minute)
            for (m, field), value in sums.items():
                if m == minute:
                    pipe.hincrbyfloat(key, field, value)
            gauges = {field: value for (m, field), value in last.items() if m == minute}
            if gauges:
                pipe.hset(key, mapping=gauges)  # type: ignore[arg-type]
            pipe.expire(key, KEEP_S)
        if errors:
            pipe.lpush(ERRORS, *errors)
            pipe.ltrim(ERRORS, 0, ERRORS_KEPT - 1)
        if snapshot is not None:
            replica, fields = snapshot
            pipe.hset(REPLICAS, replica, json.dumps({**fields, "seen_at": time.time()}))
        try:
            pipe.execute()
        except RedisError as exc:
            logger.debug("live stats not written (%s); kept for the next flush", exc)
            oldest = int(time.time() // 60) - KEEP_S // 60  # past that, Redis would drop it
            with self._lock:
                for slot, value in sums.items():
                    if slot[0] >= oldest:
                        self._sums[slot] += value
                self._last = {**{k: v for k, v in last.items() if k[0] >= oldest}, **self._last}
                self._errors = (errors + self._errors)[-ERRORS_KEPT:]

    def start(
        self,
        client: redis.Redis,
        describe: Callable[[], tuple[str, dict[str, Any]]] | None = None,
        period_s: float = FLUSH_PERIOD_S,
    ) -> None:
        """Flush every ``period_s`` from a daemon thread (once per process)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(period_s)
                try:
                    self.flush(client, describe() if describe else None)
                except Exception:
                    logger.exception("live stats flush failed")

        self._thread = threading.Thread(target=loop, name="pixserve-live", daemon=True)
        self._thread.start()


class Ongoing:
    """Requests in progress in this replica (the dashboard's ongoing requests)."""

    def __init__(self) -> None:
        self.value = 0

    def __enter__(self) -> None:
        self.value += 1

    def __exit__(self, *_: object) -> None:
        self.value -= 1


@dataclass
class _LiveMetric:
    """A platform metric as fields of the minute hash: ``c|name|tags`` (counter),
    ``g|name|tags`` (gauge), ``h|name|tags|le`` and ``hs|name|tags`` (histogram)."""

    stats: LiveStats
    name: str
    buckets: Sequence[float] = ()

    def inc(self, value: float = 1.0, tags: Tags | None = None) -> None:
        self.stats.add(f"c|{self.name}|{_tags(tags)}", value)

    def set(self, value: float, tags: Tags | None = None) -> None:
        self.stats.set(f"g|{self.name}|{_tags(tags)}", value)

    def observe(self, value: float, tags: Tags | None = None) -> None:
        position = bisect.bisect_left(self.buckets, value)
        bound = str(self.buckets[position]) if position < len(self.buckets) else "+Inf"
        self.stats.add(f"h|{self.name}|{_tags(tags)}|{bound}", 1)
        self.stats.add(f"hs|{self.name}|{_tags(tags)}", value)


class LiveFactory:
    """``MetricFactory`` recording into a ``LiveStats`` buffer."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats

    def counter(self, name: str, description: str, tag_keys: Sequence[str]) -> Counter:
        return _LiveMetric(self.stats, name)

    def gauge(self, name: str, description: str, tag_keys: Sequence[str]) -> Gauge:
        return _LiveMetric(self.stats, name)

    def histogram(
        self, name: str, description: str, buckets: Sequence[float], tag_keys: Sequence[str]
    ) -> Histogram:
        return _LiveMetric(self.stats, name, tuple(buckets))


class _Tee:
    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def inc(self, value: float = 1.0, tags: Tags | None = None) -> None:
        for metric in self.metrics:
            metric.inc(value, tags)

    def set(self, value: float, tags: Tags | None = None) -> None:
        for metric in self.metrics:
            metric.set(value, tags)

    def observe(self, value: float, tags: Tags | None = None) -> None:
        for metric in self.metrics:
            metric.observe(value, tags)


class TeeFactory:
    """Every metric recorded into each of several factories (Prometheus and live)."""

    def __init__(self, *factories: MetricFactory) -> None:
        self.factories = factories

    def counter(self, name: str, description: str, tag_keys: Sequence[str]) -> Counter:
        return _Tee([f.counter(name, description, tag_keys) for f in self.factories])

    def gauge(self, name: str, description: str, tag_keys: Sequence[str]) -> Gauge:
        return _Tee([f.gauge(name, description, tag_keys) for f in self.factories])

    def histogram(
        self, name: str, description: str, buckets: Sequence[float], tag_keys: Sequence[str]
    ) -> Histogram:
        return _Tee([f.histogram(name, description, buckets, tag_keys) for f in self.factories])


@dataclass
class Minute:
    """One minute's numbers, summed over every replica."""

    at: int  # the minute's start, unix seconds
    fields: dict[str, float]

    def total(self, kind: str, name: str, **match: str) -> float:
        """Sum of a counter (``c``) or histogram count (``h``) over tag sets matching."""
        total = 0.0
        for field, value in self.fields.items():
            parts = field.split("|")
            if parts[0] == kind and parts[1] == name and _matches(parts[2], match):
                total += value
        return total

    def tag_values(self, kind: str, name: str, tag: str) -> set[str]:
        """The values one tag takes in this minute's fields of a metric."""
        return {
            _parse_tags(parts[2]).get(tag, "")
            for parts in (field.split("|") for field in self.fields)
            if parts[0] == kind and parts[1] == name
        }

    def gauge(self, name: str) -> float | None:
        values = [v for f, v in self.fields.items() if f.startswith(f"g|{name}|")]
        return max(values) if values else None


def _matches(tags: str, match: dict[str, str]) -> bool:
    parsed = _parse_tags(tags)
    return all(parsed.get(k) == v for k, v in match.items())


class LiveReader:
    """Reads the live numbers back: minutes, latency percentiles, cost, replicas, errors."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def minutes(self, count: int = 60) -> list[Minute]:
        """The last ``count`` minutes, oldest first (empty minutes included)."""
        now = int(time.time() // 60)
        span = range(now - count + 1, now + 1)
        async with self.client.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(minute_key(minute))
            answers = await pipe.execute()
        return [
            Minute(minute * 60, {as_text(k): float(v) for k, v in raw.items()})
            for minute, raw in zip(span, answers, strict=True)
        ]

    async def replicas(self) -> list[dict[str, Any]]:
        """Snapshots written in the last ``REPLICA_FRESH_S``; long-gone ones are removed."""
        raw = await self.client.hgetall(REPLICAS)
        fresh, stale = [], []
        now = time.time()
        for replica, value in raw.items():
            record = json.loads(value)
            age = now - float(record.get("seen_at", 0))
            if age <= REPLICA_FRESH_S:
                fresh.append({"replica": as_text(replica), **record})
            elif age > 600:
                stale.append(replica)
        if stale:
            await self.client.hdel(REPLICAS, *stale)
        return sorted(fresh, key=lambda r: (str(r.get("deployment")), r["replica"]))

    async def errors(self, limit: int = 50) -> list[dict[str, Any]]:
        raw = await self.client.lrange(ERRORS, 0, limit - 1)
        return [json.loads(value) for value in raw]


def latency_by_route(minutes: list[Minute], name: str = "pixserve_request_seconds") -> list[
    dict[str, Any]
]:  # fmt: skip
    """Per route: request count, errors (5xx: the platform's), refusals (4xx: the
    caller's) and p50/p95/p99 latency, interpolated within the histogram's buckets as
    Prometheus does."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for minute in minutes:
        for field, value in minute.fields.items():
            parts = field.split("|")
            if parts[0] == "h" and parts[1] == name:
                route = _parse_tags(parts[2]).get("route", "")
                buckets[route][float(parts[3])] += value
    rows = []
    for route, counts in sorted(buckets.items()):
        codes = {code for m in minutes
                 for code in m.tag_values("c", "pixserve_requests_total", "code")}  # fmt: skip
        answered = {kind: sum(m.total("c", "pixserve_requests_total", route=route, code=code)
                              for m in minutes for code in codes if code.startswith(kind))
                    for kind in ("4", "5")}  # fmt: skip
        rows.append({
            "route": route, "requests": sum(counts.values()), "errors": answered["5"],
            "rejected": answered["4"],
            **{f"p{int(q * 100)}": quantile(q, counts) for q in (0.5, 0.95, 0.99)},
        })  # fmt: skip
    return rows


def quantile(q: float, counts: dict[float, float]) -> float | None:
    """The q-quantile of a histogram given per-bucket (not cumulative) counts by upper
    bound; linear within the bucket; the highest finite bound for the +Inf bucket."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0.0, 0.0
    finite = sorted(b for b in counts if b != float("inf"))
    for bound in [*finite, float("inf")]:
        count = counts.get(bound, 0.0)
        if seen + count >= rank and count > 0:
            if bound == float("inf"):
                return finite[-1] if finite else None
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return finite[-1] if finite else None
