"""Platform metrics through Ray's metrics agent: after a known workload on the real
Serve app, the Prometheus text holds the expected counters and histogram counts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
Samples = list[tuple[str, dict[str, str], float]]
_LINE = re.compile(r"^(ray_pixserve_\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
EXPORT_PERIOD_S = 12  # Ray's agent publishes what workers recorded about every 10 s


def scrape(url: str) -> Samples:
    samples = []
    for line in httpx.get(url, timeout=30).text.splitlines():
        match = _LINE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` (all workers) carrying these labels."""
    return sum(value for series, tags, value in samples
               if series == name and labels.items() <= tags.items())  # fmt: skip


def eventually(url: str, check: Callable[[Samples], bool], timeout_s: float = 90) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(2)


def test_a_known_workload_shows_in_the_metrics(client: httpx.Client, metrics_url: str) -> None:
    time.sleep(EXPORT_PERIOD_S)  # let earlier tests' samples reach the exporter
    before = scrape(metrics_url)
    image = encode(astronaut(16))
    for _ in range(3):
        files = {"image": ("a.png", image, "image/png")}
        ok = client.post("/v1/upscale", files=files, data={"model": TINY_COMPACT})
        assert ok.status_code == 200
    bad = client.post("/v1/upscale", files={"image": ("a.png", b"junk", "image/png")})
    assert bad.status_code == 400
    job = submit(client, [encode(astronaut(20))] * 2).json()
    assert wait(client, job["id"])["status"] == "succeeded"

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return total(samples, name, **labels) - total(before, name, **labels)

    upscale = {"route": "/v1/upscale"}
    expected = {
        ("ray_pixserve_requests_total", ("code", "200")): 3.0,
        ("ray_pixserve_requests_total", ("code", "400")): 1.0,
        ("ray_pixserve_request_seconds_count", ()): 4.0,
    }

    def requests_done(samples: Samples) -> bool:
        images = delta(samples, "ray_pixserve_images_total", model=TINY_COMPACT, path="job")
        # the Upscaler's samples leave from its own process, on its own export cycle
        passes = delta(samples, "ray_pixserve_batch_fill_ratio_count", model=TINY_COMPACT)
        return (
            images == 2
            and passes >= 1
            and all(
                delta(samples, name, **upscale, **dict([pair] if pair else [])) == value
                for (name, pair), value in expected.items()
            )
        )

    after = eventually(metrics_url, requests_done)
    for (name, pair), value in expected.items():
        assert delta(after, name, **upscale, **dict([pair] if pair else [])) == value, name
    assert delta(after, "ray_pixserve_images_total", model=TINY_COMPACT, path="sync") == 3
    assert delta(after, "ray_pixserve_images_total", model=TINY_COMPACT, path="job") == 2
    megapixels = delta(after, "ray_pixserve_megapixels_in_total", model=TINY_COMPACT)
    assert megapixels == pytest.approx((3 * 16 * 16 + 2 * 20 * 20) / 1e6)
    assert delta(after, "ray_pixserve_step_seconds_count", step="decode") == 5
    assert delta(after, "ray_pixserve_step_seconds_count", step="store_output") == 2
    assert delta(after, "ray_pixserve_job_item_seconds_count", status="succeeded") == 2
    assert delta(after, "ray_pixserve_batch_fill_ratio_count", model=TINY_COMPACT) >= 1
    assert delta(after, "ray_pixserve_compute_seconds_total", model=TINY_COMPACT) > 0
    # CPU replicas hold no GPU share, so their estimated GPU cost stays zero
    assert delta(after, "ray_pixserve_gpu_cost_usd_total", model=TINY_COMPACT) == 0
    names = {name for name, _, _ in after}
    for gauge in ("queue_depth", "queue_oldest_age_seconds", "dead_letters", "model_load_seconds"):
        assert f"ray_pixserve_{gauge}" in names, gauge
    streams = {tags.get("stream") for name, tags, _ in after if name == "ray_pixserve_dead_letters"}
    assert streams == {"pixserve:work:dead", "pixserve:webhooks:dead"}
