"""``pixserve status``: the running service's readiness, deployment by deployment."""

from __future__ import annotations

import argparse

from services.cli.tasks import client_for
from services.config import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="readiness of the service and its models")
    status.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
    status.set_defaults(handler=show_status)


def show_status(args: argparse.Namespace, settings: Settings) -> int:
    client = client_for(args, settings, timeout_s=30)
    ready = client.get_json("/readyz", allow_status=(503,))
    print(f"service: {'READY' if ready['ready'] else 'NOT READY'} ({args.url or settings.api_url})")
    for name, item in ready["deployments"].items():
        state = "ready" if item["ready"] else f"not ready {item.get('error') or ''}".strip()
        print(f"  {name}: {state}; device={item.get('device')} loaded={item.get('loaded')}")
        for model, reason in (item.get("missing") or {}).items():
            print(f"    waiting for {model}: {reason}")
    return 0 if ready["ready"] else 1
