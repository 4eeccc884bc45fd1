"""Platform metrics backed by Ray's metrics: exported in Prometheus format by every Ray
node's metrics agent (port 8080 in the chart's pods), beside Serve's own metrics; and
the same numbers into the live stats in Redis that ``/dashboard`` reads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from ray import serve
from ray.util import metrics

from services.config import Settings
from services.redis_client import connect_redis_sync
from services.telemetry.live import LiveStats, TeeFactory
from services.telemetry.metrics import PlatformMetrics, Tags

logger = logging.getLogger(__name__)


class _RayMetric:
    """Adapts one Ray metric to the platform's Counter/Gauge/Histogram protocols. A
    metric that cannot be recorded is logged, never raised: metrics must not fail work."""

    def __init__(
        self, name: str, metric: metrics.Counter | metrics.Gauge | metrics.Histogram
    ) -> None:
        self.name, self.metric = name, metric

    def inc(self, value: float = 1.0, tags: Tags | None = None) -> None:
        if value > 0 and isinstance(self.metric, metrics.Counter):  # Ray refuses 0
            self._record(self.metric.inc, value, tags)

    def set(self, value: float, tags: Tags | None = None) -> None:
        if isinstance(self.metric, metrics.Gauge):
            self._record(self.metric.set, value, tags)

    def observe(self, value: float, tags: Tags | None = None) -> None:
        if isinstance(self.metric, metrics.Histogram):
            self._record(self.metric.observe, value, tags)

    def _record(self, record: Callable[..., None], value: float, tags: Tags | None) -> None:
        try:
            record(value, tags or {})
        except Exception:
            logger.exception("metric %s not recorded", self.name)


class RayMetricFactory:
    """``MetricFactory`` over ``ray.util.metrics``."""

    def counter(self, name: str, description: str, tag_keys: Sequence[str]) -> _RayMetric:
        return _RayMetric(name, metrics.Counter(name, description, tag_keys=tuple(tag_keys)))

    def gauge(self, name: str, description: str, tag_keys: Sequence[str]) -> _RayMetric:
        return _RayMetric(name, metrics.Gauge(name, description, tag_keys=tuple(tag_keys)))

    def histogram(
        self, name: str, description: str, buckets: Sequence[float], tag_keys: Sequence[str]
    ) -> _RayMetric:
        histogram = metrics.Histogram(name, description, list(buckets), tag_keys=tuple(tag_keys))
        return _RayMetric(name, histogram)


@cache
def live_stats() -> LiveStats:
    """The process's live-stats buffer (flushed once ``start_live`` ran)."""
    return LiveStats()


@cache
def platform_metrics() -> PlatformMetrics:
    """One set per process (Ray refuses a second registration of a name)."""
    return PlatformMetrics(TeeFactory(RayMetricFactory(), live_stats().factory))


def start_live(settings: Settings, describe: Callable[[], dict[str, Any]]) -> LiveStats:
    """Flush this replica's live stats to Redis, with ``describe()`` as its snapshot
    (plus its app, deployment and replica id)."""
    context = serve.get_replica_context()
    identity = {"app": context.app_name, "deployment": context.deployment}
    replica = context.replica_id.unique_id
    stats = live_stats()
    stats.start(connect_redis_sync(settings), lambda: (replica, {**identity, **describe()}))
    return stats
