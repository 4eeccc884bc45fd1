"""Tiling reproduces whole-image inference of the same model (PSNR >= 50 dB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.config import Settings
from services.imaging.tiling import plan_grid, split_tiles, stitch_tiles
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.tiny import TINY_COMPACT, TINY_RRDB
from services.models.upscaler import TileRequest, UpscaleEngine
from tests.utils.images import psnr


@pytest.fixture(scope="module")
def engine(tiny_store: tuple[object, object]) -> UpscaleEngine:
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, models=[TINY_RRDB, TINY_COMPACT])
    loaded = UpscaleEngine(settings, ModelStore(settings.model_store, load_manifest(manifest)))
    loaded.load()
    return loaded


def whole_image(engine: UpscaleEngine, model: str, image: np.ndarray, pad: int) -> np.ndarray:
    """The reference: one forward pass over the reflect-padded image, border cropped."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    tensor = torch.from_numpy(padded.transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        out = engine.models[model].module(tensor).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    scale = engine.models[model].scale
    height, width = image.shape[:2]
    return out[pad * scale : (pad + height) * scale, pad * scale : (pad + width) * scale]


def tiled(engine: UpscaleEngine, model: str, image: np.ndarray, tile: int, pad: int) -> np.ndarray:
    grid = plan_grid(image.shape[0], image.shape[1], tile, pad)
    (out,) = engine.predict([TileRequest(model, split_tiles(image, grid))])
    assert isinstance(out, np.ndarray)
    return stitch_tiles(out, grid, engine.models[model].scale)


@pytest.mark.parametrize(("model", "pad"), [(TINY_RRDB, 20), (TINY_COMPACT, 10)])
@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (90, 33), (1, 1), (2, 45)])
def test_tiles_match_whole_image(
    engine: UpscaleEngine, model: str, pad: int, height: int, width: int
) -> None:
    image = np.random.default_rng(height * width).random((height, width, 3), dtype=np.float32)
    expected = whole_image(engine, model, image, pad)
    result = tiled(engine, model, image, tile=16, pad=pad)
    assert result.shape == expected.shape
    assert psnr(result, expected) >= 50.0


def test_grid_covers_image_with_equal_tiles() -> None:
    grid = plan_grid(100, 250, tile=64, pad=8)
    assert (grid.rows, grid.cols, grid.count) == (2, 4, 8)
    tiles = split_tiles(np.zeros((100, 250, 3), np.float32), grid)
    assert tiles.shape == (8, 3, 80, 80)


def test_small_image_shrinks_tile() -> None:
    grid = plan_grid(20, 13, tile=192, pad=10)
    assert grid.tile == 24 and grid.count == 1


def test_identity_stitch_is_lossless() -> None:
    image = np.random.default_rng(1).random((41, 77, 4), dtype=np.float32)
    grid = plan_grid(41, 77, tile=16, pad=5)
    assert np.array_equal(stitch_tiles(split_tiles(image, grid), grid, 1), image)
