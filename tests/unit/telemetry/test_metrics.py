"""The metric catalogue: dashboards only plot metrics the platform records, and the
recording helpers put the numbers where the dashboards look."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.telemetry.metrics import in_memory, record_forward_pass, record_image

DASHBOARDS = Path(__file__).resolve().parents[3] / "helm" / "pixserve" / "dashboards"


def test_dashboards_only_use_recorded_metrics() -> None:
    _, factory = in_memory()
    recorded = {f"ray_{name}" for name in factory.metrics}
    used = set()
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used |= set(re.findall(r"ray_pixserve_\w+", target["expr"]))
    plain = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert plain, "the platform dashboard lost its panels"
    assert plain <= recorded, plain - recorded


def test_record_image_and_forward_pass() -> None:
    metrics, factory = in_memory()
    record_image(metrics, "x4plus", "sync", (100, 50), (400, 200), {"decode": 0.1})
    record_forward_pass(metrics, "x4plus", tiles=6, capacity=8, seconds=36.0, gpu_share=0.5,
                        gpu_hour_price_usd=2.0)  # fmt: skip
    assert factory.metrics["pixserve_images_total"].get(model="x4plus", path="sync") == 1
    assert factory.metrics["pixserve_megapixels_out_total"].get(model="x4plus") == 0.08
    assert factory.metrics["pixserve_batch_fill_ratio"].observations[(("model", "x4plus"),)] == [
        0.75
    ]
    # 36 s at half a GPU priced 2 USD/h: 0.01 USD
    assert factory.metrics["pixserve_gpu_cost_usd_total"].get(model="x4plus") == 0.01
