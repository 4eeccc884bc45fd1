"""The face pipeline in-process: detection -> alignment -> restoration -> paste onto the
background, upscaled by the tile engine when asked; faceless images; option checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.config import Settings
from services.errors import InvalidParameter
from services.imaging.codec import DecodedImage
from services.models.faces import FaceCrops, FaceEngine
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.faces import DEFAULT_MAX_FACES, FaceOptions, FaceResult, restore_faces
from services.pipelines.options import face_options
from services.pipelines.upscale import UpscaleOptions, upscale
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_BLIND_DETECTOR, TINY_DETECTOR, TINY_GFPGAN, TINY_RRDB


@pytest.fixture(scope="module")
def settings(tiny_store: tuple[Path, Path]) -> Settings:
    root, manifest = tiny_store
    return Settings(model_store=root, extra_manifest=manifest, models=[TINY_RRDB],
                    face_models=[TINY_GFPGAN], face_detectors=[TINY_DETECTOR, TINY_BLIND_DETECTOR],
                    tile_size=32, tile_pad=8)  # fmt: skip


@pytest.fixture(scope="module")
def engines(settings: Settings) -> tuple[FaceEngine, EngineBackend]:
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    faces, tiles = FaceEngine(settings, store), UpscaleEngine(settings, store)
    faces.load()
    tiles.load()
    return faces, EngineBackend(tiles)


def run(
    pixels: np.ndarray, options: FaceOptions, engines: tuple[FaceEngine, EngineBackend],
    settings: Settings,
) -> FaceResult:  # fmt: skip
    faces, tiles = engines

    async def restore(crops: FaceCrops) -> np.ndarray:
        (result,) = faces.restore([crops])
        assert isinstance(result, np.ndarray)
        return result

    image = DecodedImage(pixels, 8, "png")
    return asyncio.run(restore_faces(image, options, faces.detect, restore, tiles, settings))


def photo(size: int = 96) -> np.ndarray:
    return astronaut(size)


def test_the_central_face_is_restored_onto_the_upscaled_background(
    engines: tuple[FaceEngine, EngineBackend], settings: Settings
) -> None:
    options = FaceOptions(TINY_GFPGAN, TINY_DETECTOR, upscale=2, background_model=TINY_RRDB,
                          only_center_face=True)  # fmt: skip
    result = run(photo(), options, engines, settings)
    assert result.pixels.shape == (192, 192, 3) and len(result.faces) == 1
    assert result.detected > 1  # the tiny detector sees a lattice; one was chosen
    (face,) = result.faces
    x0, y0, x1, y1 = face.box
    assert (x1 - x0, y1 - y0) == (64, 64) and abs((x0 + x1) / 2 - 48) <= 16
    plain = upscale(DecodedImage(photo(), 8, "png"), UpscaleOptions(TINY_RRDB, 2.0), 4,
                    engines[1], settings)  # fmt: skip
    background = asyncio.run(plain).pixels
    assert background is not None
    changed = np.abs(result.pixels.astype(int) - background).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.any()
    # only the face's region (at 2x) was touched: the paste stays inside its box, give
    # or take the mask's feathered edge
    assert xs.min() >= 2 * x0 - 4 and xs.max() <= 2 * x1 + 4
    assert ys.min() >= 2 * y0 - 4 and ys.max() <= 2 * y1 + 4


def test_a_faceless_image_is_a_result_not_an_error(
    engines: tuple[FaceEngine, EngineBackend], settings: Settings
) -> None:
    pixels = photo()
    result = run(pixels, FaceOptions(TINY_GFPGAN, TINY_BLIND_DETECTOR), engines, settings)
    assert result.faces == [] and result.detected == 0
    assert np.array_equal(result.pixels, pixels)


def test_gray_and_alpha_images_keep_their_channels(
    engines: tuple[FaceEngine, EngineBackend], settings: Settings
) -> None:
    rgba = np.concatenate([photo(64), np.full((64, 64, 1), 128, np.uint8)], axis=2)
    options = FaceOptions(TINY_GFPGAN, TINY_BLIND_DETECTOR)
    assert run(rgba, options, engines, settings).pixels.shape == (64, 64, 4)
    gray = photo(64)[:, :, 1:2]
    assert run(gray, options, engines, settings).pixels.shape == (64, 64, 1)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (FaceOptions("m", "d", weight=1.5), "weight"),
        (FaceOptions("m", "d", fidelity=-0.1), "fidelity"),
        (FaceOptions("m", "d", upscale=8), "upscale"),
        (FaceOptions("m", "d", max_faces=0), "max_faces"),
    ],
)
def test_options_out_of_range_are_named(options: FaceOptions, field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        options.check(Settings())


def test_the_default_face_count_follows_a_lower_server_limit(settings: Settings) -> None:
    """An operator who lowers ``max_faces`` below the default of 10 does not make every
    request that leaves ``max_faces`` out fail; one that asks for more is refused."""
    manifest = load_manifest(settings.extra_manifest)
    limited = settings.model_copy(update={"max_faces": 3})
    assert face_options({}, manifest, limited).max_faces == 3
    assert face_options({}, manifest, settings).max_faces == DEFAULT_MAX_FACES
    assert face_options({"max_faces": 2}, manifest, limited).max_faces == 2
    with pytest.raises(InvalidParameter, match="max_faces must be 1 to 3"):
        face_options({"max_faces": 5}, manifest, limited)
