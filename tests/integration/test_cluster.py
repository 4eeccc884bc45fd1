"""The platform on a multi-node Ray cluster on this machine, and the loss of a node.

A head and two workers started with ``ray start`` (tests/utils/ray_cluster.py). The
workers are the GPU pool: no CPUs, a custom ``gpu_pool`` resource standing for their
GPUs, which the model deployment asks for as it would ask for ``num_gpus``; the head
carries the CPU deployments (Ingress, Dispatcher, Codec) and the Serve proxy. So every
image crosses nodes through Ray on its way to a model and back. A worker is SIGKILLed,
process group and all, while a job runs: every item still ends with its output, once,
and the lost replica comes back on the surviving worker.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.ray_cluster import RayCluster
from tests.utils.redis_server import free_port, redis_server
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
ITEMS = 40
POOL = {"num_cpus": 0, "resources": {"gpu_pool": 1}}  # a model replica: one "GPU" share
CPU_SIDE = {"ray_actor_options": {"num_cpus": 0.1},
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}  # fmt: skip


def cluster_config(tiny_store: tuple[Path, Path], redis_url: str, objects: Path,
                   port: int) -> dict[str, Any]:  # fmt: skip
    """The packaged Serve config, upscaling only, placed by pool, the proxy on the head
    (every node here shares one address, so one proxy per node would share a port)."""
    from deployments import local

    root, manifest = tiny_store
    args = {
        "model_store": str(root), "extra_manifest": str(manifest),
        "models": [TINY_RRDB, TINY_COMPACT], "default_model": TINY_RRDB,
        "face_models": [], "face_detectors": [], "diffusion_checkpoints": {},
        "denoise_models": [], "caption_model": None, "tag_model": None, "nsfw_model": None,
        "vqa_model": None, "tile_size": 32, "tile_pad": 8,
        "redis_url": redis_url, "storage_url": f"file://{objects}", "visibility_timeout_s": 3,
    }  # fmt: skip
    upscaler = {"ray_actor_options": POOL,
                "autoscaling_config": {"min_replicas": 2, "max_replicas": 2}}  # fmt: skip
    deployments = {"Ingress": CPU_SIDE, "Dispatcher": CPU_SIDE, "Codec": CPU_SIDE,
                   "Upscaler": upscaler}  # fmt: skip
    config = local.localize(local.load_config(), args=args, deployments=deployments, port=port)
    config["proxy_location"] = "HeadOnly"
    return dict(config)


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    started = RayCluster()
    try:
        started.start_head(num_cpus=4)
        for _ in range(2):  # the GPU pool: two "GPUs" a node
            started.add_worker(num_cpus=0, resources={"gpu_pool": 2})
        yield started
    finally:
        started.stop()


def replicas_by_node(cluster: RayCluster, deployment: str) -> Counter[str]:
    return Counter(cluster.driver("placement")["replicas"].get(deployment, []))


def test_replicas_spread_over_the_pool_and_survive_a_node_loss(
    cluster: RayCluster, tiny_store: tuple[Path, Path], tmp_path: Path
) -> None:
    head, first, second = cluster.node_ids
    port = free_port()
    with redis_server(tmp_path / "redis") as redis_url:
        config = tmp_path / "serve.json"
        config.write_text(json.dumps(cluster_config(tiny_store, redis_url, tmp_path / "objects",
                                                    port)))  # fmt: skip
        cluster.driver("deploy", str(config))
        placement = cluster.driver("placement")["replicas"]
        assert Counter(placement["Upscaler"]) == {first: 1, second: 1}  # spread over the pool
        for deployment in ("Ingress", "Dispatcher", "Codec"):
            assert placement[deployment] == [head]  # the CPU side stays off the GPU pool

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            sync = client.post("/v1/upscale", files={"image": ("a.png", encode(astronaut(24)))},
                               data={"model": TINY_COMPACT})  # fmt: skip
            assert sync.status_code == 200 and sync.content.startswith(b"\x89PNG")
            images = [encode(astronaut(96 + i % 4)) for i in range(ITEMS)]
            job = submit(client, images, model=TINY_RRDB).json()
            while True:  # kill the first worker once the job is under way
                progress = client.get(f"/v1/jobs/{job['id']}").json()["progress"]
                if progress["done"] >= 4:
                    break
                time.sleep(0.1)
            assert progress["done"] < ITEMS, "the job ended before the node could be lost"
            killed_at = time.monotonic()
            cluster.kill(1)
            done = wait(client, job["id"], timeout_s=600)
            finished_s = time.monotonic() - killed_at
            assert done["status"] == "succeeded", done
            assert done["progress"]["done"] == ITEMS
            assert all(item["output_url"] and not item.get("error") for item in done["items"])
            retried = sum(item["attempts"] > 1 for item in done["items"])
            outputs = list((tmp_path / "objects" / "outputs" / "jobs" / job["id"]).iterdir())
            assert len(outputs) == ITEMS  # one output per item, none twice
            for item in done["items"]:
                output = client.get(f"/v1/jobs/{job['id']}/items/{item['index']}/output")
                assert output.status_code == 200
                width = int.from_bytes(output.content[16:20], "big")
                assert width == 4 * (96 + item["index"] % 4)

            deadline = time.monotonic() + 300  # the controller replaces the lost replica
            while replicas_by_node(cluster, "Upscaler") != {second: 2}:
                assert time.monotonic() < deadline, replicas_by_node(cluster, "Upscaler")
                time.sleep(2)
            recovered_s = time.monotonic() - killed_at
            alive = {node["id"]: node["alive"] for node in cluster.driver("nodes")}
            assert alive == {head: True, first: False, second: True}
            again = client.post("/v1/upscale", files={"image": ("a.png", encode(astronaut(24)))},
                                data={"model": TINY_COMPACT})  # fmt: skip
            assert again.status_code == 200
    print(
        f"node loss: {retried} items delivered again; the job finished {finished_s:.1f} s "
        f"and two replicas were back on the surviving node {recovered_s:.1f} s after the kill"
    )
