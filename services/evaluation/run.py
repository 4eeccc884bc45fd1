"""An evaluation's run: each reference cropped to the model's factor, degraded, restored
by the model through a ``Restore`` callable (the service's use case, or an HTTP call)
and scored; a bicubic baseline per scale beside the models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import cv2
import numpy as np

from services.evaluation.quality import Degradation, crop_to, degrade, score
from services.evaluation.references import Reference
from services.evaluation.report import BASELINE, EvalReport, ImageScore, ModelScore

# the model's name and its degraded input -> the restored pixels (uint8 RGB)
Restore = Callable[[str, np.ndarray], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Candidate:
    """A model to evaluate: what it does and by how much it enlarges."""

    name: str
    task: str
    scale: int


async def evaluate(
    candidates: list[Candidate],
    references: list[Reference],
    how: Degradation,
    restore: Restore,
    *,
    source: str,
    max_side: int,
    gpu_hour_price_usd: float,
) -> EvalReport:
    """Score every candidate on every reference, one image at a time (so seconds per
    image is latency, not a share of a batch), then the bicubic baseline of each scale
    above 1; rows sorted by PSNR."""
    rows = []
    for candidate in candidates:
        images = [await _one(candidate, reference, how, restore) for reference in references]
        rows.append(ModelScore.of(candidate.name, candidate.task, candidate.scale, images,
                                  gpu_hour_price_usd))  # fmt: skip
    for scale in sorted({c.scale for c in candidates if c.scale > 1}):
        baseline = Candidate(f"{BASELINE}-x{scale}" if _scales(candidates) > 1 else BASELINE,
                             "upscale", scale)  # fmt: skip
        images = [await _one(baseline, reference, how, bicubic(scale)) for reference in references]
        rows.append(ModelScore.of(baseline.name, "upscale", scale, images, gpu_hour_price_usd,
                                  kind="baseline"))  # fmt: skip
    rows.sort(key=lambda row: -row.psnr)
    return EvalReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        references=[reference.name for reference in references], source=source,
        max_side=max_side, degradation=how, gpu_hour_price_usd=gpu_hour_price_usd,
        models=rows,
    )  # fmt: skip


def bicubic(scale: int) -> Restore:
    """The baseline: OpenCV's bicubic upscale by ``scale``."""

    async def restore(_: str, pixels: np.ndarray) -> np.ndarray:
        height, width = pixels.shape[:2]
        return np.asarray(cv2.resize(pixels, (width * scale, height * scale),
                                     interpolation=cv2.INTER_CUBIC))  # fmt: skip

    return restore


async def _one(
    candidate: Candidate, reference: Reference, how: Degradation, restore: Restore
) -> ImageScore:
    truth = crop_to(reference.pixels, candidate.scale)
    low = await asyncio.to_thread(degrade, truth, candidate.scale, how)
    started = time.perf_counter()
    restored = await restore(candidate.name, low)
    seconds = time.perf_counter() - started
    psnr, ssim = await asyncio.to_thread(score, truth, restored, candidate.scale)
    return ImageScore(image=reference.name, psnr=psnr, ssim=ssim, seconds=seconds,
                      input_size=(low.shape[1], low.shape[0]),
                      output_size=(restored.shape[1], restored.shape[0]))  # fmt: skip


def _scales(candidates: list[Candidate]) -> int:
    return len({c.scale for c in candidates if c.scale > 1})
