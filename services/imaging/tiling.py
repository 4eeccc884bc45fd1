"""Split images into equal-size overlapping tiles and stitch model outputs back.

Every tile has the same shape (``tile + 2 * pad`` square), so tiles from different
images batch together in one forward pass. The image is reflect-padded by ``pad``
on all sides (the border policy of Real-ESRGAN's pre-padding and of the ncnn
engine), then edge-padded up to a whole number of tiles; each tile's output keeps
only its core, so stitching is seamless once ``pad`` covers the model's receptive
field and needs no blending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie: ``rows x cols`` cores of ``tile`` px."""

    height: int
    width: int
    tile: int
    pad: int

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def input_size(self) -> int:
        """Edge of each tile as fed to the model, context included."""
        return self.tile + 2 * self.pad


def plan_grid(height: int, width: int, tile: int, pad: int) -> TileGrid:
    """Shrink the tile to the image (in steps of 8 px) so small images waste little."""
    fitted = min(tile, 8 * math.ceil(max(height, width) / 8))
    return TileGrid(height=height, width=width, tile=fitted, pad=pad)


def split_tiles(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Cut an HxWxC image into an (N, C, S, S) float32 stack, row-major."""
    padded = _pad_image(image, grid)
    size = grid.input_size
    tiles = np.empty((grid.count, image.shape[2], size, size), dtype=np.float32)
    for index, (top, left) in enumerate(_origins(grid)):
        window = padded[top : top + size, left : left + size]
        tiles[index] = window.transpose(2, 0, 1)
    return tiles


def stitch_tiles(outputs: np.ndarray, grid: TileGrid, scale: int) -> np.ndarray:
    """Assemble (N, C, S*scale, S*scale) outputs into an (H*scale)x(W*scale)xC image."""
    channels = outputs.shape[1]
    core = grid.tile * scale
    border = grid.pad * scale
    canvas = np.empty((grid.rows * core, grid.cols * core, channels), dtype=np.float32)
    for index, (top, left) in enumerate(_origins(grid)):
        kept = outputs[index, :, border : border + core, border : border + core]
        canvas[top * scale : top * scale + core, left * scale : left * scale + core] = (
            kept.transpose(1, 2, 0)
        )
    return canvas[: grid.height * scale, : grid.width * scale]


def _origins(grid: TileGrid) -> list[tuple[int, int]]:
    return [
        (row * grid.tile, col * grid.tile) for row in range(grid.rows) for col in range(grid.cols)
    ]


def _pad_image(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    pad = grid.pad
    reflected = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    extra_rows = grid.rows * grid.tile - grid.height
    extra_cols = grid.cols * grid.tile - grid.width
    return np.pad(reflected, ((0, extra_rows), (0, extra_cols), (0, 0)), mode="edge")
