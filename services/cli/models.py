"""``pixserve models list|pull|push|import``: inspect and fill the model store;
``pixserve models ps|load|unload|add``: what the running service's replicas hold,
loading or unloading a model on all of them, adding one (``/v1/admin/models``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from services.cli.progress import ProgressBar
from services.cli.tables import table
from services.cli.tasks import client_for
from services.config import Settings
from services.errors import InvalidParameter
from services.models import importers, sources
from services.models.manifest import load_manifest
from services.models.remote import RemoteModels
from services.models.store import ModelStore, fetch_hint


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("models", help="list, pull or import model weights")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="models in the manifest and the store")
    listing.add_argument("--no-verify", action="store_true", help="skip sha256 checks")
    listing.set_defaults(handler=list_models)
    pull = actions.add_parser("pull", help="download an official .pth (needs internet)")
    pull.add_argument("name")
    pull.add_argument("--sha256", help="accept this checksum where the manifest pins none")
    pull.set_defaults(handler=pull_model)
    push = actions.add_parser("push", help="upload models to the S3 model store")
    push.add_argument("names", nargs="*", help="models to upload (default: all present)")
    push.set_defaults(handler=push_models)
    for command in ("import", "import-ncnn"):  # import-ncnn: the name it had before
        importing = actions.add_parser(
            command,
            help="import weights registry packages ship (offline)" if command == "import"
            else argparse.SUPPRESS,
        )  # fmt: skip
        importing.add_argument(
            "names", nargs="*",
            help="models to import (default: every one whose package is installed, "
                 "except copyleft ones, which are imported only when named)",
        )  # fmt: skip
        importing.add_argument("--from", dest="folder", help="folder holding the package's files")
        importing.set_defaults(handler=import_models)
    adding = actions.add_parser("add", help="add a .pth/.safetensors to the running service")
    adding.add_argument("file", type=Path, help="the weights (.pth or .safetensors)")
    adding.add_argument("--name", required=True, help="the model's name in requests")
    adding.add_argument("--task", choices=("upscale", "denoise"), default="upscale")
    adding.add_argument("--license", default="unknown", help="the weights' licence")
    adding.add_argument("--description", default="", help="a line for GET /v1/models")
    adding.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
    adding.set_defaults(handler=add_model)
    running = actions.add_parser("ps", help="models each replica of the service holds")
    running.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
    running.set_defaults(handler=show_replicas)
    for action, text in (("load", "load a model on every replica of its deployment"),
                         ("unload", "free a model's memory on every replica (it loads "
                                    "again on its next request)")):  # fmt: skip
        residency = actions.add_parser(action, help=text)
        residency.add_argument("name")
        residency.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
        residency.set_defaults(handler=change_residency, action=action)


def _store(settings: Settings) -> ModelStore:
    return ModelStore(settings.model_store, load_manifest(settings.extra_manifest))


def list_models(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    print(f"model store: {store.root}")
    rows = []
    for name, spec in store.manifest.models.items():
        held = store.describe(name, check=not args.no_verify)
        if not held.present:
            state, size, how = "absent", "-", fetch_hint(spec)
        else:
            state = {True: "verified", False: "MISMATCH", None: "unchecked"}[held.checksum_ok]
            size, how = f"{held.size_bytes / 1e6:.1f} MB", f"{held.source}: {held.path}"
        rows.append([name, spec.task, spec.architecture, f"x{spec.scale}", state, size, how])
    headers = ["NAME", "TASK", "ARCH", "SCALE", "STATE", "SIZE", "SOURCE / HOW"]
    print(table(headers, rows, right=frozenset({5})))
    return 0


def pull_model(args: argparse.Namespace, settings: Settings) -> int:
    bar = ProgressBar(total=100, label="% downloaded")

    def report(done: int, total: int | None) -> None:
        if total:
            bar.update(100 * done // total)

    path = sources.pull(_store(settings), args.name, args.sha256, progress=report)
    bar.close()
    print(f"{args.name}: downloaded and verified -> {path}")
    return 0


def push_models(args: argparse.Namespace, settings: Settings) -> int:
    remote = RemoteModels.from_settings(settings)
    if remote is None:
        raise InvalidParameter("set model_store_s3_prefix (PIXSERVE_MODEL_STORE_S3_PREFIX) first")
    store = _store(settings)
    names = args.names or [n for n in store.manifest.models if store.describe(n, False).present]
    for name in names:
        if not store.describe(name, check=False).present:
            raise InvalidParameter(
                f"{name} is not in the local store; {fetch_hint(store.manifest.get(name))}"
            )
        keys = remote.push(store, [name])
        print(f"{name}: {len(keys)} file(s) -> s3://{remote.bucket}/{remote.prefix}")
    return 0


def import_models(args: argparse.Namespace, settings: Settings) -> int:
    """Import the named models, or every permissively licensed one whose package is
    installed (the others are listed with the package that would bring them)."""
    store = _store(settings)
    folder = None if args.folder is None else Path(args.folder)
    named = bool(args.names)
    names = args.names or [
        name for name, spec in store.manifest.models.items()
        if sources.importable(spec) and not spec.opt_in
    ]  # fmt: skip
    skipped = []
    for name in names:
        spec = store.manifest.get(name)
        if spec.opt_in:
            print(f"{name}: licence {spec.license}; imported because it was named")
        if not named and not importers.package_dir_exists(sources.source_of_kind(spec, "package")):
            skipped.append(name)
            continue
        path = sources.import_package(store, name, folder)
        print(f"{name}: imported and verified -> {path}")
    if skipped:
        packages = sorted({str(sources.source_of_kind(store.manifest.get(n), "package").package)
                           for n in skipped})  # fmt: skip
        print(f"not imported ({', '.join(skipped)}): install {' '.join(packages)}")
    return 0


def show_replicas(args: argparse.Namespace, settings: Settings) -> int:
    """A row per model per replica: loaded, memory, last use; then each replica's RSS."""
    fleet = client_for(args, settings, timeout_s=60).get_json("/v1/admin/models")
    rows = []
    for deployment in fleet["deployments"]:
        for replica in deployment["replicas"]:
            for model in replica["models"]:
                rows.append([deployment["deployment"], replica["replica"], model["name"],
                             "yes" if model["loaded"] else "no", _mb(model["memory_bytes"]),
                             _ago(model["last_used"]), model["detail"] or ""])  # fmt: skip
            rows.append([deployment["deployment"], replica["replica"], "(process)", "",
                         _mb(replica["rss_bytes"]), "", f"RSS on {replica['device']}"])  # fmt: skip
        if deployment["unanswered"]:
            print(f"{deployment['deployment']}: {deployment['unanswered']} replica(s) did not "
                  "answer")  # fmt: skip
    headers = ["DEPLOYMENT", "REPLICA", "MODEL", "LOADED", "MEMORY", "LAST USED", "DETAIL"]
    print(table(headers, rows, right=frozenset({4})))
    return 0


def add_model(args: argparse.Namespace, settings: Settings) -> int:
    """Upload weights; each replica of the model's deployment says it loaded them."""
    if not args.file.is_file():
        raise InvalidParameter(f"{args.file}: no such file")
    form = {"name": args.name, "task": args.task, "license": args.license,
            "description": args.description}  # fmt: skip
    client = client_for(args, settings, timeout_s=1800)
    answer = client.post_form("/v1/admin/models", form, [args.file], field="file")
    spec = answer["model"]
    print(f"{spec['name']}: {spec['architecture']} x{spec['scale']} ({spec['task']}), "
          f"{answer['size_bytes'] / 1e6:.1f} MB, sha256 {answer['sha256']}")  # fmt: skip
    for replica in answer["replicas"]:
        state = f"error: {replica['error']}" if replica["error"] else "loaded"
        print(f"{answer['deployment']} {replica['replica']}: {state}")
    return 1 if any(replica["error"] for replica in answer["replicas"]) else 0


def change_residency(args: argparse.Namespace, settings: Settings) -> int:
    """``load`` or ``unload`` on every replica; each replica's change and memory."""
    client = client_for(args, settings, timeout_s=600)
    answer = client.post_form(f"/v1/admin/models/{args.name}/{args.action}", {})
    for replica in answer["replicas"]:
        done = f"{args.action}ed" if replica["changed"] else f"already {args.action}ed"
        memory = f"RSS {_mb(replica['rss_before'])} -> {_mb(replica['rss_bytes'])}"
        error = f"; error: {replica['error']}" if replica["error"] else ""
        print(f"{answer['deployment']} {replica['replica']}: {args.name} {done} "
              f"({memory}, {replica['seconds']:.2f} s){error}")  # fmt: skip
    if args.action == "unload":
        print(f"freed {_mb(answer['freed_bytes'])} across {len(answer['replicas'])} replica(s)")
    return 1 if any(replica["error"] for replica in answer["replicas"]) else 0


def _mb(value: Any) -> str:
    return "-" if value is None else f"{int(value) / 1e6:.1f} MB"


def _ago(when: float | None) -> str:
    return "never" if when is None else f"{max(0.0, time.time() - when):.0f} s ago"
