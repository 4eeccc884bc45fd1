"""What travels to a tile deployment and back: a whole integer image in, the output's
pixels (or the device's JPEG of them) out. Light on purpose: the Ingress imports it
without torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NOISE_LEVEL = 25.0  # FFDNet's noise sigma (0-255 scale) when a request gives none
MAX_NOISE_LEVEL = 75.0  # the range FFDNet was trained on


@dataclass(frozen=True)
class TileJob:
    """One request for one model: a whole image, HxWxC uint8 (uint16 for 16-bit inputs),
    C 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA); the output has its dtype and
    channels at ``size`` (width, height), or at the model's native scale."""

    model: str
    pixels: np.ndarray
    size: tuple[int, int] | None = None
    jpeg_quality: int | None = None  # JPEG wanted: encoded on the device where it can be
    request_id: str = ""
    traceparent: str | None = None  # the caller's span, linked from the batch's span
    progress_key: str | None = None  # a job item's: its tiles done are reported
    noise_level: float | None = None  # FFDNet's input, 0-255 scale; other models: None


@dataclass(frozen=True)
class TileOutput:
    """A request's result: the output pixels, or its JPEG when the device encoded it;
    ``fallback`` names the deployment kind that ran it when the first one could not
    (``cpu``: the GPU ran out of memory, see ``cpu_fallback``)."""

    pixels: np.ndarray | None
    jpeg: bytes | None
    tiles: int
    fallback: str | None = None
