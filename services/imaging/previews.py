"""Small JPEG previews of work in progress, for clients watching a job live: an
upscale's canvas stitched so far (the rest the input, enlarged), and a diffusion's
latents decoded by a linear map instead of the VAE (a few microseconds, not a decode).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as nnf

from services.imaging.tiling import TileGrid

Preview = Callable[[], bytes]  # renders the work so far as JPEG, when someone watches
PREVIEW_SIDE = 256  # the longer side of every preview, in px
PREVIEW_QUALITY = 70
# SDXL's latent channels to RGB, a least-squares fit of decoded images on latents
# (the coefficients ComfyUI publishes for its latent previews); the 4 rows are the
# latent channels, the columns R, G, B
SDXL_LATENT_RGB = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653),
                   (0.0568, 0.1687, -0.0755), (-0.3112, -0.2359, -0.2076))  # fmt: skip


def preview_size(height: int, width: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """(height, width) at most ``side`` on the longer side, never enlarged."""
    factor = min(1.0, side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def stitched_preview(
    canvas: torch.Tensor, pixels: np.ndarray, grid: TileGrid, scale: int, done: int
) -> bytes:
    """The output canvas (H*scale, W*scale, C) where its first ``done`` tiles are pasted,
    the input enlarged elsewhere, shrunk to ``PREVIEW_SIDE`` and JPEG-encoded."""
    height, width = preview_size(canvas.shape[0], canvas.shape[1])
    planes = canvas[..., : min(3, canvas.shape[2])].permute(2, 0, 1)[None].float()
    shrunk = nnf.interpolate(planes, size=(height, width), mode="area")[0]
    output = _rgb8(shrunk.permute(1, 2, 0).cpu().numpy(), canvas.dtype == torch.uint16)
    source = pixels if pixels.ndim == 3 else pixels[:, :, None]
    enlarged = cv2.resize(np.ascontiguousarray(source[..., : min(3, source.shape[2])]),
                          (width, height), interpolation=cv2.INTER_LINEAR)  # fmt: skip
    before = _rgb8(enlarged if enlarged.ndim == 3 else enlarged[:, :, None],
                   pixels.dtype == np.uint16)  # fmt: skip
    rows = (np.arange(height) + 0.5) * grid.height / height // grid.tile
    cols = (np.arange(width) + 0.5) * grid.width / width // grid.tile
    index = rows[:, None] * grid.cols + cols[None, :]
    picture = np.where((index < min(done, grid.count))[:, :, None], output, before)
    return _jpeg(picture)


def latent_preview(latents: torch.Tensor) -> bytes:
    """The first image of a (B, 4, h, w) SDXL latent batch as RGB through the linear
    map, at 8x its latent size capped at ``PREVIEW_SIDE``, JPEG-encoded."""
    factors = torch.tensor(SDXL_LATENT_RGB, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("chw,cr->rhw", latents[0, :4].float(), factors)
    height, width = preview_size(rgb.shape[1] * 8, rgb.shape[2] * 8)
    rgb = nnf.interpolate(rgb[None], size=(height, width), mode="bilinear")[0]
    picture = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return _jpeg(picture)


def _rgb8(pixels: np.ndarray, sixteen: bool) -> np.ndarray:
    """uint8 RGB from float or integer pixels of 1 or 3 channels (16-bit scaled down)."""
    scaled = pixels.astype(np.float32) / (257.0 if sixteen else 1.0)
    rgb = np.repeat(scaled, 3, axis=2) if scaled.shape[2] == 1 else scaled
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])  # fmt: skip
    if not ok:
        raise ValueError("the preview could not be JPEG-encoded")
    return bytes(encoded.tobytes())
