"""Run the Serve config on a single machine: the embedded default of ``pixserve up``.

The config file stays the one source; a local run only fills in what depends on the
machine (absolute model-store path, GPU share when CUDA is present, the HTTP port).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import serve
from ray.serve._private import api as serve_private_api
from ray.serve.schema import ServeDeploySchema

from services.config import Settings
from services.registry import OPTIONAL_DEPLOYMENTS, deployments_in_use

DEFAULT_CONFIG = Path(__file__).with_name("serve_config.yaml")
APP_NAME = "pixserve"


def load_config(path: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def localize(
    config: dict[str, Any],
    args: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` with app args, per-deployment options and the port overridden."""
    result = copy.deepcopy(config)
    app = result["applications"][0]
    app["args"] = {**app.get("args", {}), **(args or {})}
    store = Path(app["args"].get("model_store", "var/models")).expanduser()
    app["args"]["model_store"] = str(store.resolve())
    for entry in app.get("deployments", []):
        _merge(entry, (deployments or {}).get(entry["name"], {}))
    if port is not None:
        result.setdefault("http_options", {})["port"] = port
    return result


def deploy(config: dict[str, Any], timeout_s: float = 600.0) -> None:
    """Start Serve on the connected Ray cluster, deploy ``config``, wait until all run.

    Uses the same private entry points as ``serve run CONFIG`` (Ray 2.60), which has no
    public in-process equivalent for a config file. The tracing config also goes to the
    controller's constructor: Serve 2.60 does not checkpoint a deployed config's tracing,
    so a controller restarted after a crash would start untraced replicas.
    """
    schema = ServeDeploySchema.model_validate(without_unused_deployments(config))
    client = serve_private_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location,
        global_tracing_config=schema.tracing_config,
    )  # fmt: skip
    client.deploy_apps(schema, _blocking=False)
    deadline = time.monotonic() + timeout_s  # for all apps together
    for app in schema.applications:
        wait_until_running(app.name, max(1.0, deadline - time.monotonic()))


def without_unused_deployments(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` without the options of model deployments its apps' settings
    leave out of the graph (nothing configured for them): Serve refuses options for a
    deployment an app does not have. The Helm chart prunes the same way."""
    result = copy.deepcopy(config)
    for app in result["applications"]:
        used = deployments_in_use(Settings(**app.get("args", {})))
        app["deployments"] = [
            entry for entry in app.get("deployments", [])
            if entry["name"] not in OPTIONAL_DEPLOYMENTS or entry["name"] in used
        ]  # fmt: skip
    return result


def wait_until_running(app_name: str, timeout_s: float) -> None:
    """Poll Serve until the app runs; raise with Serve's message if it fails or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploying {app_name} failed: {app.message}")
        time.sleep(0.5)
    raise TimeoutError(f"{app_name} was not running after {timeout_s:.0f} s")


def minimum_cpus(config: dict[str, Any]) -> int:
    """Logical CPUs the config's minimum replicas reserve (``num_cpus`` x ``min_replicas``
    over every deployment), rounded up: a smaller Ray could never place the graph."""
    total = 0.0
    for app in without_unused_deployments(config).get("applications", []):
        for entry in app.get("deployments", []):
            cpus = float((entry.get("ray_actor_options") or {}).get("num_cpus", 1))
            scaling = entry.get("autoscaling_config") or {}
            total += cpus * int(scaling.get("min_replicas", entry.get("num_replicas", 1)))
    return math.ceil(total)


def start_ray(num_cpus: int | None = None, metrics_port: int | None = None) -> None:
    """Start (or join) a local Ray instance in the Serve namespace; ``metrics_port``
    fixes where its metrics agent serves Prometheus text (else Ray picks a port)."""
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, namespace="serve", include_dashboard=False,
                 _metrics_export_port=metrics_port)  # fmt: skip


def shutdown() -> None:
    """Stop Serve and disconnect from (or stop the local) Ray."""
    if ray.is_initialized():
        serve.shutdown()  # type: ignore[no-untyped-call]  # Serve leaves it unannotated
        ray.shutdown()


def _merge(target: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
