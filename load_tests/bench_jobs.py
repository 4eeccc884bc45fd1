"""Job path vs sync path, one run: the same N small images through ``POST /v1/jobs``
(one batch, collected by polling) and through ``POST /v1/upscale`` at the same
concurrency (the dispatcher's in-flight limit), on the tiny model, on the real Serve
app with a real redis-server and a file:// store. Prints a table and writes JSON;
asserts nothing.

    PYTHONPATH=. python load_tests/bench_jobs.py --items 1000 --size 32
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray
from PIL import Image

from deployments import local
from tests.utils.redis_server import redis_server
from tests.utils.tiny_models import TINY_COMPACT, build_tiny_store


def images(count: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def start(root: Path, redis_url: str, concurrency: int) -> str:
    manifest = build_tiny_store(root / "models")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    single = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}
    batch = {"max_batch_size": concurrency, "batch_wait_timeout_s": 0.005}
    args = {
        "model_store": str(root / "models"), "extra_manifest": str(manifest),
        "models": [TINY_COMPACT], "default_model": TINY_COMPACT, "redis_url": redis_url,
        "storage_url": f"file://{root / 'objects'}", "max_job_items": 100_000,
        "torch_threads": os.cpu_count(), "dispatcher_concurrency": concurrency,
    }  # fmt: skip
    config = local.localize(
        local.load_config(), args=args, port=port,
        deployments={
            "Ingress": {**single, "ray_actor_options": {"num_cpus": 0.1}},
            "Upscaler": {**single, "ray_actor_options": {"num_cpus": 0.1}, "user_config": batch},
            "Dispatcher": {**single, "ray_actor_options": {"num_cpus": 0.1}},
        },
    )  # fmt: skip
    ray.init(num_cpus=8, namespace="serve", include_dashboard=False)
    local.deploy(config, timeout_s=600)
    return f"http://127.0.0.1:{port}"


def sync_path(url: str, data: list[bytes], concurrency: int) -> float:
    def send(image: bytes) -> None:
        files = {"image": ("a.png", image, "image/png")}
        httpx.post(f"{url}/v1/upscale", files=files, timeout=600).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, data))
    return time.perf_counter() - started


def job_path(url: str, data: list[bytes]) -> tuple[float, float, dict[str, Any]]:
    files = [("images", (f"{i}.png", image, "image/png")) for i, image in enumerate(data)]
    started = time.perf_counter()
    job = httpx.post(f"{url}/v1/jobs", files=files, timeout=600).json()
    submitted = time.perf_counter() - started
    while job["status"] in ("queued", "running"):
        time.sleep(0.2)
        job = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=600).json()
    return submitted, time.perf_counter() - started, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="= the dispatcher's in-flight limit"
    )
    parser.add_argument("--json", type=Path, default=Path("var/bench_jobs.json"))
    args = parser.parse_args()
    data = images(args.items, args.size)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as redis_url:
        url = start(Path(tmp), redis_url, args.concurrency)
        try:
            sync_path(url, data[:20], args.concurrency)  # warm-up
            sync_s = sync_path(url, data, args.concurrency)
            submit_s, job_s, job = job_path(url, data)
        finally:
            local.shutdown()
    assert job["status"] == "succeeded", job["status"]
    report = {
        "items": args.items, "size": args.size, "concurrency": args.concurrency,
        "sync_items_per_s": args.items / sync_s, "job_items_per_s": args.items / job_s,
        "job_submit_s": submit_s, "job_total_s": job_s, "sync_total_s": sync_s,
        "queue_overhead_ms_per_item": 1000 * (job_s - sync_s) / args.items,
        "machine": f"{platform.machine()} x{os.cpu_count()}",
    }  # fmt: skip
    print(
        f"\n{args.items} x {args.size}x{args.size} PNG, tiny model, concurrency {args.concurrency}"
    )
    print(f"sync  /v1/upscale : {report['sync_items_per_s']:8.1f} items/s ({sync_s:.1f} s)")
    print(f"jobs  /v1/jobs    : {report['job_items_per_s']:8.1f} items/s ({job_s:.1f} s, "
          f"submission {submit_s:.2f} s)")  # fmt: skip
    print(f"jobs / sync       : {report['job_items_per_s'] / report['sync_items_per_s']:.0%}; "
          f"queue overhead {report['queue_overhead_ms_per_item']:.1f} ms/item")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
