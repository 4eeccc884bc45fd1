"""The dashboard's live numbers: metrics as fields of a minute, sums and gauges read
back, percentiles interpolated in histogram buckets, and the tee to two factories."""

from __future__ import annotations

import math

import pytest

from services.telemetry.live import LiveStats, Minute, TeeFactory, latency_by_route, quantile
from services.telemetry.metrics import LATENCY_BUCKETS, PlatformMetrics, in_memory


def fields_of(stats: LiveStats) -> dict[str, float]:
    """What the next flush would add (all in the current minute)."""
    return {field: value for (_, field), value in {**stats._sums, **stats._last}.items()}


def test_metrics_become_minute_fields() -> None:
    stats = LiveStats()
    metrics = PlatformMetrics(stats.factory)
    metrics.requests.inc(tags={"route": "/v1/upscale", "code": "200"})
    metrics.requests.inc(tags={"code": "200", "route": "/v1/upscale"})
    metrics.request_seconds.observe(0.03, tags={"route": "/v1/upscale"})
    metrics.request_seconds.observe(500, tags={"route": "/v1/upscale"})
    metrics.queue_depth.set(7)
    metrics.queue_depth.set(3)
    assert fields_of(stats) == {
        "c|pixserve_requests_total|code=200,route=/v1/upscale": 2,
        "h|pixserve_request_seconds|route=/v1/upscale|0.05": 1,
        "h|pixserve_request_seconds|route=/v1/upscale|+Inf": 1,
        "hs|pixserve_request_seconds|route=/v1/upscale": 500.03,
        "g|pixserve_queue_depth|": 3,
    }


def test_a_minute_sums_counters_by_tags_and_keeps_gauges() -> None:
    minute = Minute(0, {
        "c|pixserve_images_total|model=a,path=sync": 2,
        "c|pixserve_images_total|model=a,path=job": 3,
        "c|pixserve_images_total|model=b,path=job": 4,
        "h|pixserve_job_item_seconds|status=failed|1": 1,
        "g|pixserve_queue_depth|": 5,
    })  # fmt: skip
    assert minute.total("c", "pixserve_images_total") == 9
    assert minute.total("c", "pixserve_images_total", model="a") == 5
    assert minute.total("c", "pixserve_images_total", path="job") == 7
    assert minute.total("h", "pixserve_job_item_seconds", status="failed") == 1
    assert minute.tag_values("c", "pixserve_images_total", "model") == {"a", "b"}
    assert minute.gauge("pixserve_queue_depth") == 5
    assert minute.gauge("pixserve_queue_oldest_age_seconds") is None


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 1.0), (0.25, 0.5), (1.0, 2.0), (0.75, 1.5)],
)
def test_quantiles_interpolate_within_buckets(q: float, expected: float) -> None:
    # two observations in (0, 1], two in (1, 2]
    assert quantile(q, {1.0: 2, 2.0: 2}) == pytest.approx(expected)


def test_quantile_edges() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.99, {1.0: 1, math.inf: 99}) == 1.0  # the +Inf bucket: highest bound


def test_latency_by_route_counts_errors_and_percentiles() -> None:
    stats = LiveStats()
    metrics = PlatformMetrics(stats.factory)
    for seconds, code in [(0.02, "200"), (0.02, "200"), (0.2, "503"), (0.2, "422")]:
        metrics.requests.inc(tags={"route": "/v1/upscale", "code": code})
        metrics.request_seconds.observe(seconds, tags={"route": "/v1/upscale"})
    (row,) = latency_by_route([Minute(0, fields_of(stats))])
    assert row["route"] == "/v1/upscale" and row["requests"] == 4
    assert row["errors"] == 1 and row["rejected"] == 1  # 5xx apart from 4xx
    assert LATENCY_BUCKETS[1] < row["p50"] <= LATENCY_BUCKETS[2]  # between 10 and 25 ms
    assert LATENCY_BUCKETS[4] < row["p99"] <= LATENCY_BUCKETS[5]  # between 100 and 250 ms


def test_the_tee_records_into_every_factory() -> None:
    stats = LiveStats()
    _, memory = in_memory()
    metrics = PlatformMetrics(TeeFactory(memory, stats.factory))
    metrics.images.inc(tags={"model": "m", "path": "job"})
    assert memory.metrics["pixserve_images_total"].get(model="m", path="job") == 1
    assert fields_of(stats) == {"c|pixserve_images_total|model=m,path=job": 1}


def test_a_failed_flush_keeps_recent_numbers_for_the_next_one() -> None:
    """Redis down: the counts return to the buffer, but not minutes Redis would already
    have dropped (an outage must not grow the buffer without bound)."""
    import redis

    stats = LiveStats()
    stats.add("c|recent|", 2)
    stats._sums[0, "c|ancient|"] = 5  # minute 0: 1970
    stats.error(code="boom")
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    stats.flush(unreachable, ("replica", {"deployment": "X"}))
    assert fields_of(stats) == {"c|recent|": 2}
    assert len(stats._errors) == 1
