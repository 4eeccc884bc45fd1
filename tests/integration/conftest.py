"""A real Ray Serve instance running the packaged Serve config on the tiny models.

Ray gets more logical CPUs than the machine has and each replica a small ``num_cpus``,
or a 2-core machine could never place the graph. A second application, configured
with a model the store lacks, shows how readiness and requests report it.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.models.tiny import TINY_COMPACT, TINY_RRDB
from tests.utils.redis_server import redis_server

pytestmark = pytest.mark.integration

SMALL = {
    "ray_actor_options": {"num_cpus": 0.1},
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_extra_apps(config: dict[str, Any], redis_url: str) -> dict[str, Any]:
    """Add an app configured with a model the store lacks, and one that requires keys."""
    broken = copy.deepcopy(config["applications"][0])
    broken.update(name="pixserve-missing", route_prefix="/missing")
    broken["args"]["models"] = [TINY_RRDB, "x2plus"]
    # Dispatchers sharing a Redis take each other's items, so apps that share one must
    # serve the same models: the keyed app does, this one gets its own database.
    broken["args"]["redis_url"] = redis_url.rsplit("/", 1)[0] + "/1"
    keyed = copy.deepcopy(config["applications"][0])
    keyed.update(name="pixserve-keyed", route_prefix="/keyed")
    keyed["args"].update(
        api_keys_enabled=True, redis_url=redis_url, rate_limit_burst=3, rate_limit_per_minute=6
    )
    config["applications"] += [broken, keyed]
    return config


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def serve_url(tiny_store: tuple[Path, Path], redis_url: str) -> Iterator[str]:
    import ray
    from ray import serve

    from deployments import local

    root, manifest = tiny_store
    port = _free_port()
    args = {
        "model_store": str(root),
        "extra_manifest": str(manifest),
        "models": [TINY_RRDB, TINY_COMPACT],
        "default_model": TINY_RRDB,
        "tile_size": 32,
        "tile_pad": 20,
        "tile_batch_size": 64,
        "max_upload_bytes": 2_000_000,
        "max_input_pixels": 1_000_000,
        "redis_url": redis_url,
        "storage_url": f"file://{root.parent / 'objects'}",
        "visibility_timeout_s": 5,
    }
    # a long batch wait, through the deployment's user_config, so concurrent requests meet
    batching = {"user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.3}}
    config = local.localize(
        local.load_config(),
        args=args,
        deployments={"Ingress": SMALL, "Upscaler": {**SMALL, **batching}},
        port=port,
    )
    ray.init(num_cpus=8, namespace="serve", include_dashboard=False)
    try:
        local.deploy(_with_extra_apps(config, redis_url), timeout_s=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def client(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        yield http
