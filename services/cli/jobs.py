"""``pixserve submit`` and ``pixserve jobs list|show|cancel|download``: batch jobs
through the REST API, with a progress bar while waiting."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from services.cli.client import ClientError, PixserveClient
from services.cli.progress import ProgressBar
from services.cli.tables import table
from services.cli.tasks import COMMANDS, add_options, client_for, form_of
from services.config import Settings
from services.jobs.models import WEBHOOK_EVENTS
from services.registry import TASKS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
REMOTE = ("https://", "http://", "s3://")
TERMINAL = {"succeeded", "failed", "partial", "canceled", "expired"}
OUTPUT_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
                     "image/avif": ".avif", "application/json": ".json"}  # fmt: skip


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser("submit", help="submit images (or prompts) as an async job")
    submit.add_argument(
        "inputs", nargs="*", metavar="DIR_OR_FILES",
        help="image files, folders (searched recursively), https:// URLs or s3:// keys",
    )  # fmt: skip
    submit.add_argument("--task", choices=TASKS, help="what to run (default: upscale, or "
                        "preset with --preset)")  # fmt: skip
    submit.add_argument("--preset", help="a preset's name (GET /v1/presets)")
    submit.add_argument("--prompt", action="append", help="generate: a prompt (repeatable)")
    submit.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other field of the task, as on its route (repeatable: "
                             "--set count=4 --set outputs=caption)")  # fmt: skip
    add_options(submit, COMMANDS[0].options)  # upscale's, the default task's

    submit.add_argument("--webhook-url", help="POST signed events here")
    submit.add_argument("--webhook-event", action="append", choices=WEBHOOK_EVENTS,
                        help="events to send (repeatable; default: completed)")  # fmt: skip
    submit.add_argument("--idempotency-key", help="resubmitting with it returns the same job")
    submit.add_argument("--max-items", type=int, default=1000, help="items per job (split)")
    submit.add_argument("--wait", action="store_true", help="follow progress until done")
    submit.add_argument("-o", "--download", type=Path, help="when done, save outputs here")
    submit.set_defaults(handler=submit_job)

    jobs = commands.add_parser("jobs", help="list, show, cancel or download jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--status", choices=sorted(TERMINAL | {"queued", "running"}))
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=list_jobs)
    show = actions.add_parser("show", help="a job's status, times and failed items")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true", help="the whole envelope as JSON")
    show.set_defaults(handler=show_job)
    cancel = actions.add_parser("cancel", help="cancel a job (queued items never run)")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=cancel_job)
    download = actions.add_parser("download", help="save a job's outputs")
    download.add_argument("job_id")
    download.add_argument("-o", "--output", type=Path, default=Path("."), help="folder")
    download.set_defaults(handler=download_job)
    for parser in (listing, show, cancel, download):
        parser.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")


def submit_job(args: argparse.Namespace, settings: Settings) -> int:
    """Submit (in jobs of at most ``--max-items``); with --wait or -o, follow to the end."""
    files, urls = collect_inputs(args.inputs)
    client = client_for(args, settings)
    form = task_form(args)
    if args.webhook_url:
        form["webhook_url"] = args.webhook_url
        form["webhook_events"] = args.webhook_event or ["completed"]
    inputs: list[Path | str] = [*files, *urls]
    size = max(1, args.max_items)
    # always a key, so a submission the client retries (a 503) can never make two jobs
    base_key = args.idempotency_key or f"cli-{secrets.token_hex(12)}"
    jobs = []
    for start in range(0, max(1, len(inputs)), size):  # a generate job has no inputs
        chunk = inputs[start : start + size]
        key = f"{base_key}-{start // size}"
        chunk_files = [item for item in chunk if isinstance(item, Path)]
        chunk_urls = [item for item in chunk if isinstance(item, str)]
        job = client.submit_job(chunk_files, chunk_urls, form, key)
        print(f"job {job['id']}: {job['progress']['total']} items, {job['status']}")
        jobs.append(job)
    if not (args.wait or args.download):
        return 0
    finished = follow(client, [job["id"] for job in jobs])
    failures = report_failures(finished)
    if args.download:
        for job in finished:
            download_outputs(client, job, args.download)
    return 1 if failures else 0


def task_form(args: argparse.Namespace) -> dict[str, str | list[str]]:
    """The job's task fields: the upscale options for an upscale, ``--preset``,
    ``--prompt`` and every ``--set FIELD=VALUE`` (a repeated field becomes a list)."""
    task = args.task or ("preset" if args.preset else "upscale")
    form: dict[str, str | list[str]] = {"task": task}
    form.update(form_of(args, COMMANDS[0].options))  # the upscale options given
    if args.preset:
        form["preset"] = args.preset
    if args.prompt:
        form["prompts"] = list(args.prompt)
    for assignment in args.set:
        name, equals, value = assignment.partition("=")
        if not equals or not name:
            raise ClientError("invalid_parameter", f"--set takes FIELD=VALUE, not {assignment!r}")
        previous = form.get(name)
        form[name] = value if previous is None else [*_as_list(previous), value]
    return form


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files (folders expanded to the images in them) and remote inputs, in order."""
    files: list[Path] = []
    urls: list[str] = []
    for entry in inputs:
        if entry.startswith(REMOTE):
            urls.append(entry)
            continue
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
            if not found:
                raise ClientError("not_found", f"no images in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ClientError("not_found", f"no such file or folder: {entry}")
    return files, urls


def follow(client: PixserveClient, job_ids: list[str]) -> list[Any]:
    """Follow each job's event stream to its end, drawing one bar over all their items
    (rate, ETA, and the progress inside the item running); answers the final envelopes."""
    jobs = [client.get_json(f"/v1/jobs/{job_id}") for job_id in job_ids]
    bar = ProgressBar(sum(job["progress"]["total"] for job in jobs), label="items")
    ended = {job["id"]: 0 for job in jobs}  # items ended, by job
    failed = {job["id"]: 0 for job in jobs}
    finished = []
    for job in jobs:
        for kind, data in client.events(job["id"]):
            if kind == "item" and "progress" in data and data.get("status") != "running":
                progress = data["progress"]
                ended[job["id"]] = progress["done"] + progress["failed"]
                failed[job["id"]] = progress["failed"]
                bar.failed = sum(failed.values())
                bar.update(sum(ended.values()), note="")
            elif kind == "progress":
                unit = data.get("unit", "steps")
                bar.update(bar.done, note=f"item {data['index']}: {data['step']}/"
                                          f"{data['steps']} {unit}")  # fmt: skip
            elif kind == "completed":
                finished.append(data)
    bar.close()
    for job in finished:
        print(f"job {job['id']}: {job['status']}")
    return finished


def report_failures(jobs: list[Any]) -> int:
    """Print each failed item; how many failed (a canceled job counts as failing)."""
    failures = 0
    for job in jobs:
        for item in job["items"]:
            if item["status"] != "succeeded":
                failures += 1
                reason = item.get("error") or item["status"]
                print(f"error: {job['id']} item {item['index']} ({_label(item)}): {reason}",
                      file=sys.stderr)  # fmt: skip
    return failures


def download_outputs(client: PixserveClient, job: Any, folder: Path) -> int:
    """Save every output of ``job`` under ``folder``, named after its input."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    saved = 0
    for item in job["items"]:
        if not item.get("output_url"):
            continue
        data, media_type = client.fetch(item["output_url"])
        extension = OUTPUT_EXTENSIONS.get(media_type.split(";")[0], ".bin")
        task = job.get("task", {}).get("task", "upscale")
        suffix = {"upscale": "upscaled"}.get(task, job["task"].get("preset") or task)
        name = f"{PurePosixPath(_label(item)).stem or 'image'}.{suffix}{extension}"
        if name in taken:
            name = f"{PurePosixPath(name).stem}.{item['index']}{extension}"
        taken.add(name)
        (folder / name).write_bytes(data)
        print(f"{_label(item)} -> {folder / name}")
        saved += 1
    return saved


def list_jobs(args: argparse.Namespace, settings: Settings) -> int:
    query = f"?limit={args.limit}" + (f"&status={args.status}" if args.status else "")
    listing = client_for(args, settings).get_json(f"/v1/jobs{query}")
    rows = [
        [job["id"], job["status"], f"{job['progress']['done']}/{job['progress']['total']}",
         _time(job["created_at"])]
        for job in listing["jobs"]
    ]  # fmt: skip
    print(table(["JOB", "STATUS", "DONE", "CREATED (UTC)"], rows, right=frozenset({2})))
    return 0


def show_job(args: argparse.Namespace, settings: Settings) -> int:
    job = client_for(args, settings).get_json(f"/v1/jobs/{args.job_id}")
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    progress = job["progress"]
    print(f"job {job['id']}: {job['status']}")
    print(f"  items: {progress['done']} done, {progress['failed']} failed, "
          f"{progress['total']} total")  # fmt: skip
    for field in ("created_at", "started_at", "finished_at", "expires_at"):
        if job.get(field):
            print(f"  {field.removesuffix('_at')}: {_time(job[field])}")
    for metric, value in job.get("metrics", {}).items():
        print(f"  {metric}: {value:.2f}")
    report_failures([job])
    return 0


def cancel_job(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel; a job that had already ended (or ends first) is a no-op, said as such
    with exit status 1, as ``kill`` does for a process that is gone."""
    client = client_for(args, settings)
    before = client.get_json(f"/v1/jobs/{args.job_id}")["status"]
    if before in TERMINAL:
        print(f"error: job {args.job_id} had already ended ({before}); nothing to cancel",
              file=sys.stderr)  # fmt: skip
        return 1
    job = client.delete_json(f"/v1/jobs/{args.job_id}")
    if job["status"] != "canceled":
        print(f"error: job {job['id']} ended ({job['status']}) before it could be canceled",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"job {job['id']}: canceled")
    return 0


def download_job(args: argparse.Namespace, settings: Settings) -> int:
    client = client_for(args, settings)
    job = client.get_json(f"/v1/jobs/{args.job_id}")
    saved = download_outputs(client, job, args.output)
    print(f"saved {saved} of {job['progress']['total']} outputs ({job['status']})")
    return 0 if saved == job["progress"]["total"] else 1


def _label(item: Any) -> str:
    name = str(item.get("name") or f"item-{item['index']}")
    return PurePosixPath(urlsplit(name).path).name if name.startswith(REMOTE) else name


def _time(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
