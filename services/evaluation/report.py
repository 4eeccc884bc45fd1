"""An evaluation's numbers (per model and per image), its markdown and its plot."""

from __future__ import annotations

import io
import statistics
from typing import Literal

from pydantic import BaseModel, Field

from services.evaluation.quality import Degradation

BASELINE = "bicubic"  # the classical upscale every model is measured against


class ImageScore(BaseModel):
    """One reference's restoration by one model."""

    image: str
    psnr: float
    ssim: float
    seconds: float
    input_size: tuple[int, int]  # the degraded input's width and height
    output_size: tuple[int, int]


class ModelScore(BaseModel):
    """A model's means over the references, its time and what an image costs."""

    model: str
    kind: Literal["model", "baseline"] = "model"
    task: str
    scale: int
    psnr: float
    ssim: float
    seconds_per_image: float = Field(description="Mean wall time, one image at a time.")
    cost_per_image_usd: float = Field(
        description="gpu_hour_price_usd / 3600 / the measured images per second."
    )
    images: list[ImageScore]

    @classmethod
    def of(cls, model: str, task: str, scale: int, images: list[ImageScore], price: float,
           kind: Literal["model", "baseline"] = "model") -> ModelScore:  # fmt: skip
        seconds = statistics.fmean(image.seconds for image in images)
        return cls(model=model, kind=kind, task=task, scale=scale,
                   psnr=statistics.fmean(image.psnr for image in images),
                   ssim=statistics.fmean(image.ssim for image in images),
                   seconds_per_image=seconds,
                   cost_per_image_usd=0.0 if kind == "baseline" else price / 3600 * seconds,
                   images=images)  # fmt: skip


class EvalReport(BaseModel):
    """What was measured, how, and the results, best PSNR first."""

    created: str
    references: list[str]
    source: str  # "scikit-image" or "uploaded"
    max_side: int
    degradation: Degradation
    gpu_hour_price_usd: float
    models: list[ModelScore]


def markdown(report: EvalReport, plot_name: str = "plot.png") -> str:
    """The report as markdown: how it was made, the table by model, then per image."""
    how = report.degradation
    steps = ["a bicubic downscale by the model's factor"]
    if how.noise_sigma:
        steps.append(f"Gaussian noise of sigma {how.noise_sigma:g} (seed {how.seed})")
    if how.jpeg_quality is not None:
        steps.append(f"JPEG at quality {how.jpeg_quality}")
    lines = [
        "# Quality report",
        "",
        f"Made {report.created} from {len(report.references)} reference images "
        f"({report.source}: {', '.join(report.references)}), at most {report.max_side} px "
        f"on the longer side. Each was degraded by {', then '.join(steps)}, sent through "
        "the service one image at a time, and scored against the reference on RGB with "
        "the scale's border left off (PSNR in dB; SSIM by scikit-image). Cost per image: "
        f"seconds per image x ${report.gpu_hour_price_usd:g} per GPU-hour "
        f"(`gpu_hour_price_usd`). `{BASELINE}` is OpenCV's bicubic upscale of the same "
        "input, run in the evaluating process: the classical reference. Models trained "
        "with a GAN loss (Real-ESRGAN) trade PSNR and SSIM for sharp detail, so they can "
        "score under it while looking sharper; PSNR-trained models should beat it.",
        "",
        "| model | scale | PSNR (dB) | SSIM | s / image | $ / 1000 images |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report.models:
        cost = "-" if row.kind == "baseline" else f"{row.cost_per_image_usd * 1000:.4f}"
        lines.append(f"| {row.model} | x{row.scale} | {row.psnr:.2f} | {row.ssim:.4f} | "
                     f"{row.seconds_per_image:.3f} | {cost} |")  # fmt: skip
    lines += ["", f"![PSNR and SSIM against seconds per image]({plot_name})", "",
              "## Per image", "", "| image | model | input | PSNR (dB) | SSIM | s |",
              "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for row in report.models:
        for image in row.images:
            width, height = image.input_size
            scores = f"{image.psnr:.2f} | {image.ssim:.4f} | {image.seconds:.3f}"
            lines.append(f"| {image.image} | {row.model} | {width}x{height} | {scores} |")
    return "\n".join(lines) + "\n"


def plot(report: EvalReport) -> bytes:
    """PNG: PSNR and SSIM against seconds per image, one labelled point per model."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a thread

    figure = Figure(figsize=(10, 4), dpi=100)
    axes = figure.subplots(1, 2)
    for axis, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for row in report.models:
            value = getattr(row, metric)
            marker = "x" if row.kind == "baseline" else "o"
            axis.scatter([row.seconds_per_image], [value], marker=marker)
            axis.annotate(row.model, (row.seconds_per_image, value), textcoords="offset points",
                          xytext=(5, 5), fontsize=8)  # fmt: skip
        axis.set_xscale("symlog", linthresh=1e-3)
        axis.set_xlabel("seconds per image")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    figure.suptitle(f"quality against time, {len(report.references)} images")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
