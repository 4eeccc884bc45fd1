"""The platform's metrics, named and described once.

Services record through ``PlatformMetrics``; where the numbers go is the factory's
business: the deployments pass one backed by Ray's metrics (exported in Prometheus
format on every Ray node, next to Serve's own), tests and plain processes an
in-memory one. Names carry the ``pixserve_`` prefix (Ray adds ``ray_`` on export).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Tags = dict[str, str]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Counter(Protocol):
    def inc(self, value: float = 1.0, tags: Tags | None = None) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, tags: Tags | None = None) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, tags: Tags | None = None) -> None: ...


class MetricFactory(Protocol):
    """Makes metrics; ``tag_keys`` are the labels each sample must carry."""

    def counter(self, name: str, description: str, tag_keys: Sequence[str]) -> Counter: ...

    def gauge(self, name: str, description: str, tag_keys: Sequence[str]) -> Gauge: ...

    def histogram(
        self, name: str, description: str, buckets: Sequence[float], tag_keys: Sequence[str]
    ) -> Histogram: ...


class PlatformMetrics:
    """Every metric the platform records, with what it answers for an operator."""

    def __init__(self, factory: MetricFactory) -> None:
        f = factory
        self.requests = f.counter(
            "pixserve_requests_total", "API requests by route template and status code.",
            ("route", "code"))  # fmt: skip
        self.request_seconds = f.histogram(
            "pixserve_request_seconds", "API request latency, end to end at the ingress.",
            LATENCY_BUCKETS, ("route",))  # fmt: skip
        self.images = f.counter(
            "pixserve_images_total", "Images processed, by model and path (sync or job).",
            ("model", "path"))  # fmt: skip
        self.megapixels_in = f.counter(
            "pixserve_megapixels_in_total", "Input megapixels processed.", ("model",)
        )
        self.megapixels_out = f.counter(
            "pixserve_megapixels_out_total", "Output megapixels produced.", ("model",)
        )
        self.step_seconds = f.histogram(
            "pixserve_step_seconds", "Time per pipeline step (decode, upscale, encode...).",
            LATENCY_BUCKETS, ("step",))  # fmt: skip
        self.queue_wait_seconds = f.histogram(
            "pixserve_job_queue_wait_seconds", "Time a job item waited in the queue.",
            LATENCY_BUCKETS, ())  # fmt: skip
        self.item_seconds = f.histogram(
            "pixserve_job_item_seconds", "Time a job item took once started (load to store).",
            LATENCY_BUCKETS, ("status",))  # fmt: skip
        self.queue_depth = f.gauge(
            "pixserve_queue_depth", "Job items queued or running (the work queue's backlog).",
            ())  # fmt: skip
        self.queue_oldest_age = f.gauge(
            "pixserve_queue_oldest_age_seconds", "Age of the oldest unfinished job item.", ()
        )
        self.dead_letters = f.gauge(
            "pixserve_dead_letters", "Entries in a dead-letter stream.", ("stream",)
        )
        self.leases_lost = f.counter(
            "pixserve_job_leases_lost_total",
            "Job item outcomes dropped: the delivery stalled past the visibility timeout "
            "and a later delivery held the item.", ())  # fmt: skip
        self.webhooks = f.counter(
            "pixserve_webhook_deliveries_total", "Webhook deliveries by outcome.", ("outcome",)
        )
        self.model_load_seconds = f.gauge(
            "pixserve_model_load_seconds", "How long a model took to load.", ("model",)
        )
        self.gpu_memory_bytes = f.gauge(
            "pixserve_gpu_memory_bytes", "GPU memory per replica: used, reserved, limit.",
            ("kind",))  # fmt: skip
        self.batch_fill = f.histogram(
            "pixserve_batch_fill_ratio", "Tiles per forward pass / the pass's capacity.",
            RATIO_BUCKETS, ("model",))  # fmt: skip
        self.compute_seconds = f.counter(
            "pixserve_compute_seconds_total", "Model forward time.", ("model",)
        )
        self.cpu_fallbacks = f.counter(
            "pixserve_cpu_fallbacks_total",
            "Tile requests the GPU had no memory for, run once more on the CPU fallback.",
            ("model",))  # fmt: skip
        self.gpu_cost = f.counter(
            "pixserve_gpu_cost_usd_total",
            "Estimated GPU cost: forward time x GPU share x gpu_hour_price_usd.",
            ("model",),
        )


@dataclass
class MemoryMetric:
    """One in-memory metric: totals (counters), last values (gauges) or observations."""

    name: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    observations: dict[tuple[tuple[str, str], ...], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def inc(self, value: float = 1.0, tags: Tags | None = None) -> None:
        key = _key(tags)
        self.values[key] = self.values.get(key, 0.0) + value

    def set(self, value: float, tags: Tags | None = None) -> None:
        self.values[_key(tags)] = value

    def observe(self, value: float, tags: Tags | None = None) -> None:
        self.observations[_key(tags)].append(value)

    def get(self, **tags: str) -> float:
        return self.values.get(_key(tags), 0.0)


class MemoryFactory:
    """Metrics kept in this process (tests, tools); ``metrics[name]`` reads them."""

    def __init__(self) -> None:
        self.metrics: dict[str, MemoryMetric] = {}

    def counter(self, name: str, description: str, tag_keys: Sequence[str]) -> MemoryMetric:
        return self.metrics.setdefault(name, MemoryMetric(name))

    def gauge(self, name: str, description: str, tag_keys: Sequence[str]) -> MemoryMetric:
        return self.metrics.setdefault(name, MemoryMetric(name))

    def histogram(
        self, name: str, description: str, buckets: Sequence[float], tag_keys: Sequence[str]
    ) -> MemoryMetric:
        return self.metrics.setdefault(name, MemoryMetric(name))


def in_memory() -> tuple[PlatformMetrics, MemoryFactory]:
    factory = MemoryFactory()
    return PlatformMetrics(factory), factory


def _key(tags: Tags | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((tags or {}).items()))


def record_image(
    metrics: PlatformMetrics,
    model: str,
    path: str,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    step_seconds: dict[str, float],
) -> None:
    """One processed image: count, megapixels in and out, and its steps' times."""
    metrics.images.inc(tags={"model": model, "path": path})
    metrics.megapixels_in.inc(input_size[0] * input_size[1] / 1e6, tags={"model": model})
    metrics.megapixels_out.inc(output_size[0] * output_size[1] / 1e6, tags={"model": model})
    for step, seconds in step_seconds.items():
        metrics.step_seconds.observe(seconds, tags={"step": step})


def record_forward_pass(
    metrics: PlatformMetrics,
    model: str,
    tiles: int,
    capacity: int,
    seconds: float,
    gpu_share: float,
    gpu_hour_price_usd: float,
) -> None:
    """One forward pass: how full it was, its compute time and its estimated GPU cost
    (time x the replica's GPU share x the hourly price; zero on CPU replicas)."""
    if capacity:
        metrics.batch_fill.observe(tiles / capacity, tags={"model": model})
    metrics.compute_seconds.inc(seconds, tags={"model": model})
    metrics.gpu_cost.inc(seconds / 3600 * gpu_share * gpu_hour_price_usd, tags={"model": model})
