"""``pixserve eval``: a quality report from the service (``POST /v1/admin/eval``),
written as ``report.md``, ``plot.png`` and ``report.json`` under ``--out``."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

from services.cli.jobs import IMAGE_SUFFIXES
from services.cli.tables import table
from services.cli.tasks import client_for
from services.config import Settings
from services.errors import InvalidParameter


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "eval", help="PSNR/SSIM, seconds and cost per image of models, as a report",
        description="Degrade reference images by each model's factor, run them through "
        "the service, and write report.md, plot.png and report.json (an admin key when "
        "keys are on).",
    )  # fmt: skip
    parser.add_argument("models", nargs="+", help="upscale or denoise models to score")
    parser.add_argument(
        "--images", type=Path, help="folder of reference images (default: scikit-image's set)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval-report"),
        help="folder the report is written to (default: eval-report)",
    )  # fmt: skip
    parser.add_argument("--max-side", type=int, default=256,
                        help="references shrunk to this longer side (default 256)")  # fmt: skip
    parser.add_argument("--noise", type=float, default=0.0,
                        help="Gaussian noise sigma (0-255) after the downscale")  # fmt: skip
    parser.add_argument("--jpeg-quality", type=int, help="JPEG the degraded input at it")
    parser.add_argument("--seed", type=int, default=0, help="the noise's seed")
    parser.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")
    parser.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    files = _references(args.images) if args.images is not None else []
    form: dict[str, str | list[str]] = {
        "models": list(args.models), "max_side": str(args.max_side),
        "noise_sigma": str(args.noise), "seed": str(args.seed),
    }  # fmt: skip
    if args.jpeg_quality is not None:
        form["jpeg_quality"] = str(args.jpeg_quality)
    answer = client_for(args, settings, timeout_s=3600).post_form("/v1/admin/eval", form, files)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(answer["markdown"])
    (out / "plot.png").write_bytes(base64.b64decode(answer["plot_png"]))
    (out / "report.json").write_text(json.dumps(answer["report"], indent=2) + "\n")
    rows = [[row["model"], f"x{row['scale']}", f"{row['psnr']:.2f}", f"{row['ssim']:.4f}",
             f"{row['seconds_per_image']:.3f}", f"{row['cost_per_image_usd'] * 1000:.4f}"]
            for row in answer["report"]["models"]]  # fmt: skip
    headers = ["MODEL", "SCALE", "PSNR", "SSIM", "S/IMAGE", "$/1K IMAGES"]
    print(table(headers, rows, right=frozenset({2, 3, 4, 5})))
    print(f"report: {out / 'report.md'} (plot.png, report.json beside it)")
    return 0


def _references(folder: Path) -> list[Path]:
    """The folder's image files, by name; a missing or empty folder is an error."""
    if not folder.is_dir():
        raise InvalidParameter(f"--images {folder}: not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InvalidParameter(f"--images {folder}: no image files "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")  # fmt: skip
    return found
