"""Entry point of the ``pixserve`` console script: the client CLI plus ``pixserve up``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.cli.main import main as cli_main
from services.config import Settings
from services.errors import InvalidParameter

# Where `pixserve up` has Ray export Prometheus metrics by default: fixed, so a local
# Prometheus or a browser finds them (OpenTelemetry's Prometheus exporter port, seldom
# taken; the chart's pods use 8080).
DEFAULT_METRICS_PORT = 9464


def register_up(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="start Ray and the app on this machine (Ctrl-C stops)")
    up.add_argument("--config", type=Path, help="Serve config file (default: the packaged one)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                    help="where Prometheus metrics are served: Serve's, Ray's and the "
                         "platform's, at http://127.0.0.1:PORT/metrics")  # fmt: skip
    up.add_argument("--num-cpus", type=int,
                    help="logical CPUs for Ray (default: all, or what the replicas reserve "
                         "if that is more: reservations are bookkeeping, not pinning)")  # fmt: skip
    up.add_argument("--num-gpus", type=float, help="GPU share per Upscaler replica")
    up.add_argument("--models", help="comma-separated models to load (default: config)")
    up.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the app, repeatable; VALUE is JSON where it "
                         "parses, e.g. tag_model=mobilenet-v2-imagenet or "
                         "face_detectors='[\"retinaface-mobilenet0.25\"]'")  # fmt: skip
    up.add_argument("--trace", choices=["off", "file", "otlp"], default="off",
                    help="Serve tracing: JSON files in the Serve logs dir, or OTLP to "
                         "OTEL_EXPORTER_OTLP_ENDPOINT")  # fmt: skip
    up.add_argument("--trace-sampling", type=float, default=1.0, help="share of traces kept")
    up.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    # imported here: Ray starts slowly and only `up` needs it
    from deployments import local
    from deployments.tracing import tracing_config

    overrides: dict[str, Any] = {"model_store": str(settings.model_store)}
    if settings.torch_threads is None and not _cuda_available():
        # Ray gives a replica as many torch threads as its num_cpus (1); on a CPU-only
        # machine the Upscaler is the work, so let it use every core.
        overrides["torch_threads"] = os.cpu_count() or 1
    if args.models:
        overrides["models"] = args.models.split(",")
    overrides |= _settings_overrides(args.settings)
    config = local.localize(
        local.load_config(args.config or local.DEFAULT_CONFIG),
        args=overrides,
        deployments=_gpu_overrides(args.num_gpus),
        port=args.port,
    )
    config["tracing_config"] = tracing_config(args.trace, args.trace_sampling)
    signal.signal(signal.SIGTERM, _interrupt)
    local.start_ray(num_cpus=args.num_cpus or max(os.cpu_count() or 1, local.minimum_cpus(config)),
                    metrics_port=args.metrics_port)  # fmt: skip
    try:
        local.deploy(config)
        print(
            f"pixserve is up: http://127.0.0.1:{args.port}  (API docs: /docs; metrics: "
            f"http://127.0.0.1:{args.metrics_port}/metrics; Ctrl-C stops)"
        )
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("pixserve: shutting down")
    finally:
        local.shutdown()
    return 0


def _settings_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as app arguments, checked against ``Settings`` now so a
    typo stops here with the setting named, not in a replica."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"--set {pair!r}: write KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw  # a bare string
    try:
        Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidParameter(f"--set: {problems}") from None
    return values


def _interrupt(*_: object) -> None:
    """SIGTERM stops like Ctrl-C: Serve and Ray shut down cleanly."""
    raise KeyboardInterrupt


def _gpu_overrides(num_gpus: float | None) -> dict[str, dict[str, Any]]:
    """Give the Upscaler a GPU share when CUDA is visible, unless told otherwise."""
    if num_gpus is None:
        num_gpus = 0.5 if _cuda_available() else 0.0
    return {"Upscaler": {"ray_actor_options": {"num_gpus": num_gpus}}}


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main() -> None:
    sys.exit(cli_main(registrars=[register_up]))
