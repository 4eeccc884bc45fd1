"""A load test of the running service: interactive upscales alone (the reference), then
a ramp of interactive clients beside a batch job, then idle; on the real Serve app
(tiny model, API keys on, Redis, file:// store) started by this script. Reports
latency percentiles per stage and their ratio to the reference, answers by status,
replicas of the Upscaler and the Dispatcher over time (autoscaling up and back down),
429s with Retry-After once a limited key's rate is spent, and the platform's memory at
each stage. Prints a table and writes JSON; asserts nothing.

    PYTHONPATH=. python load_tests/bench_load.py --stage-s 20 --clients 1,2,4 --job-items 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve
from ray.serve.schema import ReplicaState

from deployments import local
from load_tests.procstats import footprint
from services.auth.keys import ApiKeyStore
from services.config import Settings
from services.redis_client import connect_redis
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import redis_server
from tests.utils.tiny_models import TINY_COMPACT, build_tiny_store

QUICK = {"min_replicas": 1, "max_replicas": 2, "metrics_interval_s": 0.5,
         "look_back_period_s": 2, "upscale_delay_s": 1, "downscale_delay_s": 5}  # fmt: skip


def start(root: Path, redis_url: str) -> str:
    manifest = build_tiny_store(root / "models")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = {
        "model_store": str(root / "models"), "extra_manifest": str(manifest),
        "models": [TINY_COMPACT], "default_model": TINY_COMPACT, "redis_url": redis_url,
        "storage_url": f"file://{root / 'objects'}", "api_keys_enabled": True,
        "rate_limit_burst": 20, "visibility_timeout_s": 30,
    }  # fmt: skip
    config = local.localize(
        local.load_config(), args=args, port=port,
        deployments={
            "Ingress": {**small, "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
            "Upscaler": {**small, "autoscaling_config": QUICK},
            "Dispatcher": {**small, "autoscaling_config": {**QUICK, "target_ongoing_requests": 40}},
        },
    )  # fmt: skip
    ray.init(num_cpus=8, namespace="serve", include_dashboard=False, log_to_driver=False)
    local.deploy(config, timeout_s=600)
    return f"http://127.0.0.1:{port}"


def create_key(redis_url: str, name: str, rate: int | None) -> str:
    async def create() -> str:
        redis = connect_redis(Settings(redis_url=redis_url))
        try:
            return (await ApiKeyStore(redis).create(name, rate, False))[0]
        finally:
            await redis.aclose()

    return asyncio.run(create())


class Replicas(threading.Thread):
    """Running replicas of the Upscaler and the Dispatcher, once a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                deployments = serve.status().applications[local.APP_NAME].deployments
            except Exception:  # a busy controller: skip the sample
                continue
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1)}
            for name in ("Upscaler", "Dispatcher"):
                sample[name] = int(deployments[name].replica_states.get(ReplicaState.RUNNING, 0))
            self.samples.append(sample)


async def interactive(url: str, key: str, clients: int, seconds: float, image: bytes
                      ) -> tuple[list[float], Counter[int]]:  # fmt: skip
    """``clients`` loops of sync upscales for ``seconds``; latencies and statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await http.post("/v1/upscale", files={"image": ("a.png", image)},
                                       headers=headers)  # fmt: skip
            statuses[response.status_code] += 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, statuses


def percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"p50": latencies[0] if latencies else 0.0, "p95": 0.0, "p99": 0.0}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def memory_mb() -> float:
    """Resident memory of the platform's processes (PSS: shared pages split)."""
    return round(sum(pss for _, _, pss in footprint()), 1)


def rate_limited(url: str, key: str, count: int) -> dict[str, Any]:
    """Requests past a limited key's burst: how many 429s, and their Retry-After."""
    headers = {"Authorization": f"Bearer {key}"}
    answers = [httpx.get(f"{url}/v1/models", headers=headers, timeout=60) for _ in range(count)]
    refused = [a for a in answers if a.status_code == 429]
    waits = sorted({a.headers.get("Retry-After", "missing") for a in refused})
    return {"sent": count, "429": len(refused), "retry_after": waits}


def submit_job(url: str, key: str, items: int, image: bytes) -> str:
    files = [("images", (f"{i}.png", image, "image/png")) for i in range(items)]
    response = httpx.post(f"{url}/v1/jobs", files=files, data={"model": TINY_COMPACT},
                          headers={"Authorization": f"Bearer {key}"}, timeout=600)  # fmt: skip
    response.raise_for_status()
    return str(response.json()["id"])


def job_status(url: str, key: str, job_id: str) -> dict[str, Any]:
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"},
                    timeout=60).json()  # fmt: skip
    return {"status": job["status"], **job["progress"]}


def run(url: str, redis_url: str, options: argparse.Namespace) -> dict[str, Any]:
    """The stages, the job, the idle wait and the rate-limit probe."""
    ramp = [int(n) for n in options.clients.split(",")]
    image = encode(astronaut(options.size))
    key = create_key(redis_url, "load", 1_000_000)
    replicas = Replicas()
    replicas.start()
    stages: list[dict[str, Any]] = []

    def record(name: str, clients: int, result: tuple[list[float], Counter[int]]) -> None:
        latencies, statuses = result
        stages.append({"stage": name, "clients": clients, "ok": len(latencies),
                       "statuses": dict(statuses), **percentiles(latencies),
                       "memory_mb": memory_mb()})  # fmt: skip

    record("alone", ramp[0], asyncio.run(interactive(url, key, ramp[0], options.stage_s, image)))
    job_id = submit_job(url, key, options.job_items, image)
    for clients in ramp:
        result = asyncio.run(interactive(url, key, clients, options.stage_s, image))
        record(f"beside job ({job_status(url, key, job_id)['status']})", clients, result)
    deadline = time.monotonic() + 600
    while job_status(url, key, job_id)["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    job = job_status(url, key, job_id)
    settle = time.monotonic() + options.settle_s
    while time.monotonic() < settle:  # idle: replicas come back down
        time.sleep(1)
        last = replicas.samples[-1] if replicas.samples else {}
        if last.get("Upscaler") == 1 and last.get("Dispatcher") == 1:
            break
    limits = rate_limited(url, create_key(redis_url, "limited", 30), 40)
    replicas.stop.set()
    return {"stages": stages, "job": job, "replicas": replicas.samples,
            "rate_limited": limits, "idle_memory_mb": memory_mb()}  # fmt: skip


def report(result: dict[str, Any]) -> None:
    stages, samples = result["stages"], result["replicas"]
    reference = stages[0]["p50"] or 1.0
    print(f"\n{'stage':<26}{'clients':>8}{'ok':>6}{'p50 s':>9}{'p95 s':>9}{'p99 s':>9}"
          f"{'p50/alone':>11}{'memory MB':>11}  statuses")  # fmt: skip
    for stage in stages:
        print(f"{stage['stage']:<26}{stage['clients']:>8}{stage['ok']:>6}{stage['p50']:>9.3f}"
              f"{stage['p95']:>9.3f}{stage['p99']:>9.3f}{stage['p50'] / reference:>11.2f}"
              f"{stage['memory_mb']:>11}  {stage['statuses']}")  # fmt: skip
    peak = {name: max((s.get(name, 0) for s in samples), default=0)
            for name in ("Upscaler", "Dispatcher")}  # fmt: skip
    final = samples[-1] if samples else {}
    print(f"job: {result['job']}; replicas peak {peak}, at the end {final}; "
          f"idle memory {result['idle_memory_mb']} MB")  # fmt: skip
    print(f"limited key (30/min, burst 20): {result['rate_limited']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage-s", type=float, default=20.0, help="seconds per stage")
    parser.add_argument("--clients", default="1,2,4", help="the ramp: clients per stage")
    parser.add_argument("--job-items", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--settle-s", type=float, default=60.0, help="most idle wait")
    parser.add_argument("--json", type=Path, default=Path("var/bench_load.json"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as redis_url:
        url = start(Path(tmp), redis_url)
        try:
            result = run(url, redis_url, options)
        finally:
            serve.shutdown()
            ray.shutdown()
    report(result)
    result |= {"machine": platform.platform(), "cpus": os.cpu_count(),
               "options": vars(options) | {"json": str(options.json)}}  # fmt: skip
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(result, indent=2))
    print(f"written {options.json}")


if __name__ == "__main__":
    main()
