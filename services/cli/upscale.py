"""``pixserve upscale`` and ``pixserve status``: clients of the running service."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from services.cli.client import ClientError, PixserveClient, UpscaleRequest
from services.cli.progress import ProgressBar
from services.config import Settings

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("upscale", help="upscale images through the running service")
    up.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IN [OUT]",
        help="image files; a last argument that does not exist yet is the output, as with cp",
    )
    up.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    add_upscale_options(up)
    up.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    up.set_defaults(handler=upscale_files)
    status = commands.add_parser("status", help="readiness of the service and its models")
    status.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
    status.set_defaults(handler=show_status)


def add_upscale_options(parser: argparse.ArgumentParser) -> None:
    """The upscale parameters (and the API URL), shared by ``upscale`` and ``submit``."""
    parser.add_argument("--model", help="model name (see `pixserve models list`)")
    parser.add_argument("--scale", type=float, help="output scale, e.g. 2.5")
    parser.add_argument("--width", type=int, help="target width in px")
    parser.add_argument("--height", type=int, help="target height in px")
    parser.add_argument("--format", default="png", choices=sorted(EXTENSIONS))
    parser.add_argument("--quality", type=int, default=90, help="JPEG/WEBP quality 1-100")
    parser.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")


def upscale_request(args: argparse.Namespace) -> UpscaleRequest:
    return UpscaleRequest(
        args.model, args.scale, args.width, args.height, args.format, args.quality
    )


def upscale_files(args: argparse.Namespace, settings: Settings) -> int:
    """Upscale every input; report each failure and exit 1 if any failed."""
    if args.output is None and len(args.inputs) >= 2 and not args.inputs[-1].exists():
        args.output = args.inputs.pop()
    missing = [str(path) for path in args.inputs if not path.is_file()]
    if missing:
        raise ClientError("not_found", f"no such file: {', '.join(missing)}")
    client = client_for(args, settings)
    request = upscale_request(args)
    targets = {
        path: output_path(path, args.output, len(args.inputs), args.format) for path in args.inputs
    }
    bar = ProgressBar(len(targets))
    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        futures = {
            pool.submit(_one, client, src, dst, request): src for src, dst in targets.items()
        }
        for future in as_completed(futures):
            error = future.result()
            if error:
                failures += 1
                print(f"\nerror: {futures[future]}: {error}", file=sys.stderr)
            bar.advance(ok=error is None)
    bar.close()
    for src, dst in targets.items():
        if dst.exists():
            print(f"{src} -> {dst}")
    return 1 if failures else 0


def output_path(source: Path, output: Path | None, count: int, fmt: str) -> Path:
    """Where a result goes: ``output`` itself for one input with a suffix, else a folder."""
    name = f"{source.stem}.upscaled{EXTENSIONS[fmt]}"
    if output is None:
        return source.with_name(name)
    if count == 1 and output.suffix:
        return output
    return output / name


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


def client_for(
    args: argparse.Namespace, settings: Settings, timeout_s: float = 600.0
) -> PixserveClient:
    """The REST client for a command: ``--url`` or PIXSERVE_API_URL, with the API key."""
    return PixserveClient(args.url or settings.api_url, timeout_s, api_key(settings))


def api_key(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None


def _one(client: PixserveClient, source: Path, target: Path, request: UpscaleRequest) -> str | None:
    try:
        data = client.upscale(source, request)
    except ClientError as exc:
        return str(exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return None
