"""Degrading a reference the way a model's inputs are degraded, and scoring its
restoration against the reference (PSNR, and scikit-image's SSIM)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from skimage.metrics import structural_similarity


class Degradation(BaseModel):
    """What happens to a reference besides the downscale by the model's factor."""

    noise_sigma: float = Field(
        default=0.0, ge=0, le=100, description="Gaussian noise's sigma on the 0-255 scale."
    )
    jpeg_quality: int | None = Field(
        default=None, ge=1, le=100, description="JPEG-compress the degraded input at it."
    )
    seed: int = Field(default=0, ge=0, description="The noise's seed: reports repeat.")


def crop_to(pixels: np.ndarray, factor: int) -> np.ndarray:
    """The reference cut to a multiple of ``factor`` on both sides, so the model's output
    of its downscale has the reference's exact size."""
    height, width = pixels.shape[:2]
    return pixels[: height - height % factor, : width - width % factor]


def degrade(reference: np.ndarray, factor: int, how: Degradation) -> np.ndarray:
    """The model's input: ``reference`` (already cropped to ``factor``) downscaled by
    bicubic interpolation, as the x4 models' papers degrade, then noise, then JPEG."""
    height, width = reference.shape[:2]
    low = reference
    if factor > 1:
        low = cv2.resize(reference, (width // factor, height // factor),
                         interpolation=cv2.INTER_CUBIC)  # fmt: skip
    if how.noise_sigma:
        noise = np.random.default_rng(how.seed).normal(0.0, how.noise_sigma, low.shape)
        low = np.clip(low.astype(np.float64) + noise + 0.5, 0, 255).astype(np.uint8)
    if how.jpeg_quality is not None:
        buffer = io.BytesIO()
        Image.fromarray(low).save(buffer, "JPEG", quality=how.jpeg_quality)
        low = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return np.ascontiguousarray(low)


def score(reference: np.ndarray, restored: np.ndarray, border: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``restored`` against ``reference`` on RGB, ``border`` pixels
    left off each edge (as super-resolution papers crop the scale's border)."""
    if restored.shape != reference.shape:
        raise ValueError(f"restored {restored.shape} is not the reference's {reference.shape}")
    if border and min(reference.shape[:2]) > 2 * border + 7:
        reference = reference[border:-border, border:-border]
        restored = restored[border:-border, border:-border]
    error = float(np.mean((reference.astype(np.float64) - restored) ** 2))
    psnr = 100.0 if error == 0 else min(100.0, 10 * float(np.log10(255.0**2 / error)))
    ssim = float(structural_similarity(reference, restored, channel_axis=2, data_range=255))  # type: ignore[no-untyped-call]
    return psnr, ssim
