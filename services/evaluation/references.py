"""The reference images an evaluation starts from: scikit-image's bundled photos, or
the caller's own, each as uint8 RGB no larger than ``max_side`` on its longer side."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# scikit-image's bundled images that ship with the wheel (no download): photographs,
# micrographs, textures and text, so a report shows more than one kind of content
BUNDLED = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry",
    "hubble_deep_field", "brick", "coins", "page",
)  # fmt: skip
MAX_REFERENCES = 32


@dataclass(frozen=True)
class Reference:
    """One ground-truth image by name."""

    name: str
    pixels: np.ndarray  # (H, W, 3) uint8


def bundled_references(max_side: int, names: tuple[str, ...] = BUNDLED) -> list[Reference]:
    """scikit-image's bundled images, gray ones as RGB, resized to ``max_side``."""
    from skimage import data

    return [Reference(name, fit(as_rgb(np.asarray(getattr(data, name)())), max_side))
            for name in names]  # fmt: skip


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB from gray, gray+alpha, RGB or RGBA (alpha dropped: scores are of colour)."""
    if pixels.dtype != np.uint8:
        pixels = (pixels.astype(np.float64) / np.iinfo(pixels.dtype).max * 255 + 0.5).astype(
            np.uint8
        )
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 2:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def fit(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """``pixels`` shrunk (area filter) so its longer side is at most ``max_side``."""
    height, width = pixels.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return pixels
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
