"""Tiles on the model's device: pad, cut equal-size tiles, paste their outputs back.

Every tile has the same shape (``tile + 2 * pad`` square), so tiles from different
images batch together in one forward pass. The image is reflect-padded by ``pad``
on all sides (the border policy of Real-ESRGAN's pre-padding and of the ncnn
engine), then edge-padded up to a whole number of tiles; each tile's output keeps
only its core, so stitching is seamless once ``pad`` covers the model's receptive
field and needs no blending.

Everything here is torch on whatever device the tensors live on: padding is one
gather per axis, cutting is one ``unfold`` view copied once, and outputs are pasted
core by core into a canvas of the output's integer dtype, so no float copy at output
size is ever made. Tile edges come from a few buckets (``tile_edges``), so a
compiled model sees a handful of shapes, never one per image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_TILE_EDGE = 32  # the smallest tile bucket; smaller images are padded up to it


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

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left input pixel of tile ``index`` (row-major)."""
        row, col = divmod(index, self.cols)
        return row * self.tile, col * self.tile


def tile_edges(tile_size: int) -> tuple[int, ...]:
    """The tile edges a model runs at: ``tile_size`` and its halvings (multiples of 8)
    down to ``MIN_TILE_EDGE``, smallest first."""
    edges = {tile_size}
    edge = tile_size
    while edge // 2 >= MIN_TILE_EDGE:
        edge = 8 * math.ceil(edge / 2 / 8)
        edges.add(edge)
    return tuple(sorted(edges))


def plan_grid(height: int, width: int, tile: int, pad: int) -> TileGrid:
    """The smallest tile bucket covering the whole image, else ``tile``-px tiles."""
    longest = max(height, width)
    fitted = next((edge for edge in tile_edges(tile) if edge >= longest), tile)
    return TileGrid(height=height, width=width, tile=fitted, pad=pad)


def split_tiles(planes: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """Cut (P, C, H, W) planes into a (P * N, C, S, S) stack, plane-major, then row-major."""
    padded = pad_planes(planes, grid)
    size, step = grid.input_size, grid.tile
    windows = padded.unfold(2, size, step).unfold(3, size, step)  # (P, C, rows, cols, S, S)
    channels = planes.shape[1]
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels, size, size)


def pad_planes(planes: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """Reflect-pad by ``pad`` (repeating the reflection where the image is smaller than
    the pad, as numpy does), then repeat the edge up to whole tiles."""
    rows = _padded_index(grid.height, grid.pad, grid.rows * grid.tile - grid.height)
    cols = _padded_index(grid.width, grid.pad, grid.cols * grid.tile - grid.width)
    device = planes.device
    return planes.index_select(2, rows.to(device)).index_select(3, cols.to(device))


def _padded_index(length: int, pad: int, extra: int) -> torch.Tensor:
    """Source indices of a padded axis: ``pad`` reflected on both sides, ``extra`` more
    repeating the last one."""
    positions = torch.arange(-pad, length + pad)
    if length == 1:
        reflected = torch.zeros_like(positions)
    else:
        period = 2 * (length - 1)
        folded = positions.remainder(period)
        reflected = torch.where(folded >= length, period - folded, folded)
    return torch.cat([reflected, reflected[-1:].repeat(extra)])


def tile_core(output: torch.Tensor, grid: TileGrid, scale: int, index: int) -> torch.Tensor:
    """The part of tile ``index``'s (C, S*scale, S*scale) output that lies inside the
    image, without its context border; a view, no copy."""
    top, left = grid.origin(index)
    core = grid.tile * scale
    border = grid.pad * scale
    height = min(core, (grid.height - top) * scale)
    width = min(core, (grid.width - left) * scale)
    return output[:, border : border + height, border : border + width]


def paste_core(canvas: torch.Tensor, core: torch.Tensor, grid: TileGrid, scale: int,
               index: int, channels: slice) -> None:  # fmt: skip
    """Write a (C, h, w) core into an (H*scale, W*scale, C_out) canvas at its tile's place."""
    top, left = grid.origin(index)
    height, width = core.shape[-2:]
    window = canvas[top * scale : top * scale + height, left * scale : left * scale + width]
    window[:, :, channels] = core.permute(1, 2, 0)
