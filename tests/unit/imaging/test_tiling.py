"""Tiling on the device: the same tiles and the same stitched results as the numpy
pipeline it replaced (kept here as the reference), and as whole-image inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.config import Settings
from services.imaging.tiling import (
    TileGrid,
    paste_core,
    plan_grid,
    split_tiles,
    tile_core,
    tile_edges,
)
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.tile_io import TileJob
from services.models.upscaler import UpscaleEngine
from tests.utils.images import psnr
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB


@pytest.fixture(scope="module")
def engine(tiny_store: tuple[object, object]) -> UpscaleEngine:
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, models=[TINY_RRDB, TINY_COMPACT],
                        tile_size=32, tile_pad=20)  # fmt: skip
    loaded = UpscaleEngine(settings, ModelStore(settings.model_store, load_manifest(manifest)))
    loaded.load()
    return loaded


# The numpy pipeline that ran in the Ingress before tiling moved to the model deployment.


def reference_split(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    pad = grid.pad
    reflected = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    extra = ((0, grid.rows * grid.tile - grid.height), (0, grid.cols * grid.tile - grid.width))
    padded = np.pad(reflected, (*extra, (0, 0)), mode="edge")
    size = grid.input_size
    tiles = np.empty((grid.count, image.shape[2], size, size), dtype=np.float32)
    for index in range(grid.count):
        top, left = grid.origin(index)
        tiles[index] = padded[top : top + size, left : left + size].transpose(2, 0, 1)
    return tiles


def reference_stitch(outputs: np.ndarray, grid: TileGrid, scale: int) -> np.ndarray:
    core, border = grid.tile * scale, grid.pad * scale
    canvas = np.empty((grid.rows * core, grid.cols * core, outputs.shape[1]), np.float32)
    for index in range(grid.count):
        top, left = grid.origin(index)
        kept = outputs[index, :, border : border + core, border : border + core]
        canvas[top * scale : top * scale + core, left * scale : left * scale + core] = (
            kept.transpose(1, 2, 0)
        )
    return canvas[: grid.height * scale, : grid.width * scale]


def reference_upscale(engine: UpscaleEngine, model: str, image: np.ndarray) -> np.ndarray:
    """Today's results: float tiles through the same module, stitched, recombined
    (gray as luma, alpha as the mean of a gray plane), quantised at the end."""
    loaded, settings = engine.models[model], engine.settings
    peak = 65535.0 if image.dtype == np.uint16 else 255.0
    values = image.astype(np.float32) / peak
    grid = plan_grid(image.shape[0], image.shape[1], settings.tile_size, settings.tile_pad)
    channels = image.shape[2]
    color = values[:, :, :3] if channels >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    planes = [color] + ([np.repeat(values[:, :, -1:], 3, axis=2)] if channels in (2, 4) else [])
    stitched = []
    for plane in planes:
        tiles = torch.from_numpy(reference_split(plane, grid))
        with torch.inference_mode():
            out = loaded.module(tiles).clamp(0, 1).numpy()
        stitched.append(reference_stitch(out, grid, loaded.scale))
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    result = stitched[0] if channels >= 3 else (stitched[0] @ luma)[:, :, None]
    if channels in (2, 4):
        result = np.concatenate([result, stitched[1].mean(axis=2, keepdims=True)], axis=2)
    return (np.clip(result, 0, 1) * peak).round().astype(image.dtype)


def run(engine: UpscaleEngine, model: str, image: np.ndarray) -> np.ndarray:
    (out,) = engine.predict([TileJob(model, image)])
    assert not isinstance(out, Exception) and out.pixels is not None
    return out.pixels


def random_image(height: int, width: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    peak = 65535 if dtype == np.uint16 else 255
    rng = np.random.default_rng(height * width + channels)
    return rng.integers(0, peak + 1, (height, width, channels)).astype(dtype)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (90, 33), (1, 1), (2, 45)])
def test_device_tiling_equals_the_numpy_pipeline(
    engine: UpscaleEngine, channels: int, height: int, width: int
) -> None:
    """RGB, gray, gray+alpha and RGBA at odd sizes: within 1/255 of today's results."""
    image = random_image(height, width, channels)
    expected = reference_upscale(engine, TINY_RRDB, image)
    result = run(engine, TINY_RRDB, image)
    assert result.shape == expected.shape and result.dtype == np.uint8
    assert int(np.abs(result.astype(int) - expected).max()) <= 1


def test_sixteen_bit_stays_sixteen_bit_and_matches(engine: UpscaleEngine) -> None:
    image = random_image(29, 41, 3, np.uint16)
    expected = reference_upscale(engine, TINY_COMPACT, image)
    result = run(engine, TINY_COMPACT, image)
    assert result.dtype == np.uint16 and result.shape == (58, 82, 3)
    assert int(np.abs(result.astype(int) - expected).max()) <= 257  # 1/255 of 65535


def whole_image(engine: UpscaleEngine, model: str, image: np.ndarray, pad: int) -> np.ndarray:
    """One forward pass over the reflect-padded image, border cropped."""
    padded = np.pad(image.astype(np.float32) / 255, ((pad, pad), (pad, pad), (0, 0)),
                    mode="reflect")  # fmt: skip
    tensor = torch.from_numpy(padded.transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        out = engine.models[model].module(tensor).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    scale = engine.models[model].scale
    height, width = image.shape[:2]
    return out[pad * scale : (pad + height) * scale, pad * scale : (pad + width) * scale]


@pytest.mark.parametrize("model", [TINY_RRDB, TINY_COMPACT])
def test_tiles_match_whole_image(engine: UpscaleEngine, model: str) -> None:
    """Cores of padded tiles stitch seamlessly: as good as one pass over the image."""
    image = random_image(70, 97, 3)
    expected = whole_image(engine, model, image, engine.settings.tile_pad)
    result = run(engine, model, image).astype(np.float32) / 255
    assert result.shape == expected.shape and psnr(result, expected) >= 45.0


@pytest.mark.parametrize(("height", "width"), [(100, 250), (41, 77), (1, 1), (5, 3)])
def test_split_equals_numpy_reference(height: int, width: int) -> None:
    image = np.random.default_rng(1).random((height, width, 3), dtype=np.float32)
    grid = plan_grid(height, width, tile=64, pad=8)
    planes = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    assert np.array_equal(split_tiles(planes, grid).numpy(), reference_split(image, grid))


def test_identity_paste_is_lossless() -> None:
    image = np.random.default_rng(1).integers(0, 256, (41, 77, 4)).astype(np.uint8)
    grid = plan_grid(41, 77, tile=16, pad=5)
    tiles = split_tiles(torch.from_numpy(image.transpose(2, 0, 1).copy())[None], grid)
    canvas = torch.zeros((41, 77, 4), dtype=torch.uint8)
    for index, tile in enumerate(tiles):
        paste_core(canvas, tile_core(tile, grid, 1, index), grid, 1, index, slice(0, 4))
    assert np.array_equal(canvas.numpy(), image)


def test_grid_covers_image_with_equal_tiles() -> None:
    grid = plan_grid(100, 250, tile=64, pad=8)
    assert (grid.rows, grid.cols, grid.count) == (2, 4, 8)
    tiles = split_tiles(torch.zeros((1, 3, 100, 250)), grid)
    assert tiles.shape == (8, 3, 80, 80)


@pytest.mark.parametrize(("tile", "edges"), [(256, (32, 64, 128, 256)), (192, (48, 96, 192)),
                                             (32, (32,)), (100, (56, 100))])  # fmt: skip
def test_tile_edges_are_few_buckets(tile: int, edges: tuple[int, ...]) -> None:
    assert tile_edges(tile) == edges


@pytest.mark.parametrize("size", [1, 7, 31, 33, 64, 65, 100, 127, 200, 256, 300, 1000])
def test_every_image_size_lands_on_a_bucket(size: int) -> None:
    """Small images take the smallest bucket that holds them, so a compiled model sees
    a handful of shapes, never one per image size."""
    grid = plan_grid(size, max(1, size // 3), tile=256, pad=10)
    assert grid.tile in tile_edges(256)
    assert grid.count == (1 if size <= 256 else math.ceil(size / 256) * math.ceil(size // 3 / 256))
