"""``pixserve cluster status|scale``: the RayService on Kubernetes, as KubeRay reports
it, and a deployment's replica bounds patched in its spec (services/kube/rayservice.py).
Needs a kubeconfig (or a pod's service account) allowed to get and patch rayservices."""

from __future__ import annotations

import argparse

from services.cli.tables import table
from services.config import Settings
from services.errors import InvalidParameter
from services.kube.rayservice import ServiceView, connect


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser("cluster", help="the RayService on Kubernetes: status, scale")
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="applications, deployments, replica bounds")
    status.set_defaults(handler=show_status)
    scale = actions.add_parser("scale", help="set a deployment's min/max replicas in the spec")
    scale.add_argument("deployment", help="e.g. Upscaler")
    scale.add_argument("--min", type=int, dest="min_replicas", help="fewest replicas")
    scale.add_argument("--max", type=int, dest="max_replicas", help="most replicas")
    scale.add_argument("--app", help="the application (default: wherever the name is)")
    scale.set_defaults(handler=scale_deployment)
    for parser in (status, scale):
        parser.add_argument("--name", default="pixserve", help="the RayService's name")
        parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
        parser.add_argument("--kubeconfig", help="default: KUBECONFIG or ~/.kube/config")
        parser.add_argument("--context", help="a kubeconfig context")


def show_status(args: argparse.Namespace, settings: Settings) -> int:
    view = connect(args.namespace, args.name, args.kubeconfig, args.context).view()
    _print(view)
    return 0 if view.ready.startswith("True") else 1


def scale_deployment(args: argparse.Namespace, settings: Settings) -> int:
    if args.min_replicas is None and args.max_replicas is None:
        raise InvalidParameter("cluster scale: give --min and/or --max")
    service = connect(args.namespace, args.name, args.kubeconfig, args.context)
    view = service.scale(args.app, args.deployment, args.min_replicas, args.max_replicas)
    row = next(r for r in view.deployments if r.name == args.deployment and
               (args.app is None or r.app == args.app))  # fmt: skip
    print(f"{view.namespace}/{view.name}: {row.app}/{row.name} replicas "
          f"{row.min_replicas}..{row.max_replicas} (KubeRay applies it in place)")  # fmt: skip
    return 0


def _print(view: ServiceView) -> None:
    print(f"rayservice {view.namespace}/{view.name}: ready {view.ready}; cluster {view.cluster}")
    for app, status in view.applications.items():
        print(f"  application {app}: {status}")
    rows = [[r.app, r.name, r.status, _bounds(r.min_replicas, r.max_replicas),
             f"{r.num_gpus:g}", r.message] for r in view.deployments]  # fmt: skip
    print(table(["APP", "DEPLOYMENT", "STATUS", "REPLICAS", "GPU", "MESSAGE"], rows))


def _bounds(low: int | None, high: int | None) -> str:
    return "-" if low is None and high is None else f"{low}..{high}"
