"""The pipeline: output sizing rules, and gray/RGBA/16-bit images end to end in-process."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.config import Settings
from services.errors import ImageTooLarge, InvalidParameter
from services.imaging.codec import decode_image, image_limits
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.upscale import UpscaleOptions, output_size, upscale_upload
from tests.utils.images import astronaut, encode, png16
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

SETTINGS = Settings(max_output_pixels=10_000_000)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (UpscaleOptions("m"), (400, 200)),
        (UpscaleOptions("m", scale=2.5), (250, 125)),
        (UpscaleOptions("m", width=300), (300, 150)),
        (UpscaleOptions("m", height=100), (200, 100)),
        (UpscaleOptions("m", width=123, height=45), (123, 45)),
    ],
)
def test_output_size(options: UpscaleOptions, expected: tuple[int, int]) -> None:
    assert output_size(100, 50, 4, options, SETTINGS) == expected


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        (UpscaleOptions("m", scale=0.5), InvalidParameter, "out of range"),
        (UpscaleOptions("m", scale=9), InvalidParameter, "out of range"),
        (UpscaleOptions("m", scale=2, width=10), InvalidParameter, "not both"),
        (UpscaleOptions("m", width=100_000, height=100_000), ImageTooLarge, "over the limit"),
    ],
)
def test_output_size_refusals(options: UpscaleOptions, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        output_size(100, 50, 4, options, SETTINGS)


def test_native_model_output_counts_against_the_limit() -> None:
    """A small requested size does not make a huge model output acceptable."""
    with pytest.raises(ImageTooLarge, match="model output 4000x4000"):
        output_size(1000, 1000, 4, UpscaleOptions("m", width=10), SETTINGS)


@pytest.fixture
def backend(tiny_settings: Settings) -> EngineBackend:
    store = ModelStore(tiny_settings.model_store, load_manifest(tiny_settings.extra_manifest))
    engine = UpscaleEngine(tiny_settings, store)
    engine.load()
    return EngineBackend(engine)


def run(
    data: bytes, options: UpscaleOptions, scale: int, backend: EngineBackend, settings: Settings
):  # type: ignore[no-untyped-def]
    result = asyncio.run(upscale_upload(data, options, scale, backend, settings))
    return result, decode_image(result.data, image_limits(settings))


def test_rgba_keeps_alpha(backend: EngineBackend, tiny_settings: Settings) -> None:
    rgba = np.dstack([astronaut(40), np.linspace(0, 255, 1600).reshape(40, 40).astype(np.uint8)])
    result, decoded = run(encode(rgba), UpscaleOptions(TINY_COMPACT), 2, backend, tiny_settings)
    assert decoded.pixels.shape == (80, 80, 4) and result.tiles == 2 * 4


def test_gray_stays_gray(backend: EngineBackend, tiny_settings: Settings) -> None:
    _, decoded = run(
        encode(astronaut(30)[:, :, 1]),
        UpscaleOptions(TINY_RRDB, scale=2.5),
        4,
        backend,
        tiny_settings,
    )
    assert decoded.pixels.shape == (75, 75, 1)


def test_sixteen_bit_in_sixteen_bit_out(backend: EngineBackend, tiny_settings: Settings) -> None:
    values = astronaut(24).astype(np.uint16) * 257
    _, decoded = run(png16(values), UpscaleOptions(TINY_COMPACT), 2, backend, tiny_settings)
    assert decoded.bit_depth == 16 and decoded.pixels.shape == (48, 48, 3)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_target_size_and_format(fmt: str, backend: EngineBackend, tiny_settings: Settings) -> None:
    options = UpscaleOptions(TINY_RRDB, width=100, height=60, output_format=fmt)  # type: ignore[arg-type]
    result, decoded = run(encode(astronaut(32)), options, 4, backend, tiny_settings)
    assert result.content_type == f"image/{fmt}" and decoded.pixels.shape[:2] == (60, 100)
