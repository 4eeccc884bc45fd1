"""The engine batches tiles of several requests, isolates errors, and backs off on OOM."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from services.config import Settings
from services.errors import EngineOutOfMemory, ModelNotReady, NotConfigured
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.tile_io import TileJob, TileOutput
from services.models.upscaler import UpscaleEngine
from tests.utils.tiny_models import (
    TINY_COMPACT,
    TINY_DNCNN,
    TINY_RRDB,
    TINY_SCUNET,
    TINY_X2_UNSHUFFLE,
)


@pytest.fixture
def engine(tiny_settings: Settings) -> UpscaleEngine:
    settings = tiny_settings.model_copy(
        update={"models": [TINY_RRDB, TINY_COMPACT, "x2plus"], "tile_batch_size": 4}
    )
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    loaded = UpscaleEngine(settings, store)
    loaded.load()
    return loaded


def image(height: int, width: int = 24) -> np.ndarray:
    """An RGB uint8 image that the tiny models' 32 px tiles cut into ``height // 32`` rows."""
    return np.random.default_rng(height).integers(0, 256, (height, width, 3)).astype(np.uint8)


def tiles(count: int) -> np.ndarray:
    """An image of ``count`` tiles (32 px tile rows)."""
    return image(32 * count, 32)


def pixels(result: TileOutput | Exception) -> np.ndarray:
    assert isinstance(result, TileOutput) and result.pixels is not None
    return result.pixels


def test_one_pass_serves_several_requests(engine: UpscaleEngine) -> None:
    results = engine.predict(
        [TileJob(TINY_RRDB, tiles(2), request_id="a"), TileJob(TINY_RRDB, tiles(1), request_id="b")]
    )
    assert [pixels(r).shape for r in results] == [(256, 128, 3), (128, 128, 3)]
    assert engine.passes[-1].request_ids == ("a", "b") and engine.passes[-1].tiles == 3


def test_batched_output_equals_single_output(engine: UpscaleEngine) -> None:
    first, second = image(32, 32), image(64, 64)
    (alone,) = engine.predict([TileJob(TINY_RRDB, first)])
    _, together = engine.predict([TileJob(TINY_RRDB, second), TileJob(TINY_RRDB, first)])
    assert engine.passes[-1].tiles == 5
    assert np.array_equal(pixels(alone), pixels(together))


def test_missing_model_fails_only_its_request(engine: UpscaleEngine) -> None:
    assert "pixserve models pull x2plus" in engine.status().missing["x2plus"]
    ok, missing, other = engine.predict(
        [TileJob(TINY_RRDB, tiles(1)), TileJob("x2plus", tiles(1)), TileJob(TINY_COMPACT, tiles(1))]
    )
    assert pixels(ok).shape == (128, 128, 3) and pixels(other).shape == (64, 64, 3)
    assert isinstance(missing, ModelNotReady) and "x2plus" in missing.message
    (unconfigured,) = engine.predict([TileJob("animevideov3", tiles(1))])
    assert isinstance(unconfigured, NotConfigured)  # says which variable to set
    assert "add it to PIXSERVE_MODELS" in unconfigured.message


class _OomAbove(torch.nn.Module):
    """Wraps the real model and raises CUDA's OOM error for batches above ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []  # type: ignore[var-annotated]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(batch)  # type: ignore[no-any-return]


def test_out_of_memory_halves_the_tile_batch(engine: UpscaleEngine) -> None:
    loaded = engine.models[TINY_RRDB]
    wrapper = _OomAbove(loaded.module, limit=1)
    loaded.module = wrapper
    (result,) = engine.predict([TileJob(TINY_RRDB, tiles(3))])
    assert pixels(result).shape == (384, 128, 3)
    assert wrapper.sizes == [3, 2, 1, 1, 1]
    assert loaded.batch_limit == 1


def test_out_of_memory_at_one_tile_fails_clearly(engine: UpscaleEngine) -> None:
    loaded = engine.models[TINY_RRDB]
    loaded.module = _OomAbove(loaded.module, limit=0)
    (result,) = engine.predict([TileJob(TINY_RRDB, tiles(2))])
    assert isinstance(result, EngineOutOfMemory) and "one tile" in result.message


def test_status_reports_device_and_models(engine: UpscaleEngine) -> None:
    status = engine.status()
    assert status.device == "cpu" and status.dtype == "float32"
    assert status.loaded == {TINY_RRDB: 4, TINY_COMPACT: 2}
    engine.check_health()


class _Broken(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("device lost (simulated)")


def test_health_probe_fails_when_a_model_cannot_run(engine: UpscaleEngine) -> None:
    engine.check_health()
    engine.models[TINY_COMPACT].eager = _Broken()
    with pytest.raises(RuntimeError, match="device lost"):
        engine.check_health()


def test_x2plus_shaped_model_loads_and_upscales_by_two(tiny_settings: Settings) -> None:
    """RealESRGAN_x2plus is a pixel-unshuffle RRDBNet; spandrel must see it as x2."""
    settings = tiny_settings.model_copy(update={"models": [TINY_X2_UNSHUFFLE]})
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    engine = UpscaleEngine(settings, store)
    engine.load()
    assert engine.status().loaded == {TINY_X2_UNSHUFFLE: 2}
    (result,) = engine.predict([TileJob(TINY_X2_UNSHUFFLE, image(36, 36))])
    assert pixels(result).shape == (72, 72, 3)


@pytest.mark.parametrize(
    ("setting", "share", "fraction"),
    [(None, 0.5, 0.5), (None, 0.0, None), (None, 1.0, None), (0.3, 0.5, 0.3)],
)
def test_the_cuda_memory_cap_follows_the_replica_gpu_share(
    tiny_settings: Settings, setting: float | None, share: float, fraction: float | None
) -> None:
    """A replica with half a GPU may take half its memory (the setting overrides);
    a whole card or no GPU needs no cap."""
    settings = tiny_settings.model_copy(update={"gpu_memory_fraction": setting})
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    assert UpscaleEngine(settings, store, gpu_share=share).memory_fraction == fraction


def test_denoise_models_are_padded_to_their_size_requirements(tiny_settings: Settings) -> None:
    """SCUNet needs 40 px: a 24 px image is padded and the padding cropped off again."""
    store = ModelStore(tiny_settings.model_store, load_manifest(tiny_settings.extra_manifest))
    engine = UpscaleEngine(tiny_settings, store, [TINY_SCUNET, TINY_DNCNN])
    engine.load()
    assert engine.models[TINY_SCUNET].minimum == 40
    engine.check_health()  # 8 px probes
    for model in (TINY_SCUNET, TINY_DNCNN):
        (result,) = engine.predict([TileJob(model, image(24, 24))])
        assert pixels(result).shape == (24, 24, 3)


def test_compiled_batch_buckets_pad_chunks_and_cut_them_back(engine: UpscaleEngine) -> None:
    """A compiled module runs only at its bucket sizes: a 3-tile chunk runs as 4 and
    the padding tile is dropped, with the same pixels as an unpadded run."""
    loaded = engine.models[TINY_RRDB]
    (plain,) = engine.predict([TileJob(TINY_RRDB, tiles(3))])
    wrapper = _OomAbove(loaded.module, limit=64)
    loaded.module, loaded.buckets = wrapper, (1, 2, 4)
    (padded,) = engine.predict([TileJob(TINY_RRDB, tiles(3))])
    assert wrapper.sizes == [4]
    assert np.array_equal(pixels(plain), pixels(padded))


@pytest.mark.parametrize(("size", "shape"), [((50, 70), (70, 50, 3)), ((300, 100), (100, 300, 3))])
def test_the_output_is_resized_on_the_replica(
    engine: UpscaleEngine, size: tuple[int, int], shape: tuple[int, ...]
) -> None:
    (result,) = engine.predict([TileJob(TINY_RRDB, image(32, 32), size=size)])
    assert pixels(result).shape == shape and pixels(result).dtype == np.uint8


def test_a_jpeg_asked_of_a_cpu_engine_comes_back_as_pixels(engine: UpscaleEngine) -> None:
    """Only a CUDA device encodes (nvjpeg); on a CPU the caller encodes in its threads."""
    (result,) = engine.predict([TileJob(TINY_RRDB, image(32, 32), jpeg_quality=90)])
    assert isinstance(result, TileOutput) and result.jpeg is None and result.pixels is not None


def test_tile_batch_defaults_to_one_tile_per_pass_on_cpu(tiny_settings: Settings) -> None:
    """Unset, the chunk is one tile on CPU (cache-bound; docs/benchmarks.md) and eight
    on CUDA; a set value wins on both."""
    store = ModelStore(tiny_settings.model_store, load_manifest(tiny_settings.extra_manifest))
    unset = tiny_settings.model_copy(update={"models": [TINY_RRDB], "tile_batch_size": None})
    engine = UpscaleEngine(unset, store)
    engine.load()
    assert engine.runtime.tile_batch == 1 and engine.models[TINY_RRDB].batch_limit == 1
    engine.runtime.device = torch.device("cuda")  # the rule only; nothing runs there
    assert engine.runtime.tile_batch == 8
    assert (
        UpscaleEngine(unset.model_copy(update={"tile_batch_size": 3}), store).runtime.tile_batch
        == 3
    )


def test_compiled_shapes_are_not_capped_at_dynamos_default() -> None:
    """Past dynamo's recompile limit (8) a compiled module silently runs eager; the
    engines raise it to the number of shapes they warm (edges x buckets: 16 at the
    default tile size and batch)."""
    from torch._dynamo.utils import counters

    from services.models.runtime import allow_compiled_shapes

    def graphs_for(shapes: int) -> int:
        torch._dynamo.reset()
        counters.clear()
        double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
        for size in range(1, shapes + 1):
            double(torch.zeros(size))
        return int(counters["stats"]["unique_graphs"])

    limit = torch._dynamo.config.recompile_limit
    try:
        torch._dynamo.config.recompile_limit = 8
        assert graphs_for(12) == 8  # the trap: four shapes ran uncompiled
        allow_compiled_shapes(16)
        assert graphs_for(12) == 12
    finally:
        torch._dynamo.config.recompile_limit = limit
        torch._dynamo.reset()


def test_a_job_items_tiles_are_reported_chunk_by_chunk(engine: UpscaleEngine) -> None:
    """Chunks of 4 tiles: an item of 6 tiles sharing passes with a sync request of 3
    (which has no progress key, so no reports) is told 1, 5, then 6 of 6."""
    reports: list[tuple[str | None, int, int]] = []
    previews: list[bytes] = []

    def report(job: TileJob, done: int, total: int, preview: Callable[[], bytes]) -> None:
        reports.append((job.progress_key, done, total))
        previews.append(preview())  # a live viewer's: drawn when the reporter asks

    engine.on_progress = report
    sync, item = TileJob(TINY_RRDB, tiles(3)), TileJob(TINY_RRDB, tiles(6), progress_key="j:0")
    engine.predict([sync, item])
    assert reports == [("j:0", 1, 6), ("j:0", 5, 6), ("j:0", 6, 6)]
    first, last = (np.asarray(Image.open(io.BytesIO(data))) for data in (previews[0], previews[-1]))
    assert first.shape == last.shape and first.shape[2] == 3
    assert np.abs(first.astype(int) - last).mean() > 1  # more of the canvas is the model's


def test_a_canceled_request_stops_at_the_next_chunk(engine: UpscaleEngine) -> None:
    """Its caller gone, a request's remaining chunks are skipped, but never while
    another request's tiles remain to be run."""
    reports: list[tuple[str | None, int, int]] = []
    engine.on_progress = lambda job, done, total, _: reports.append((job.progress_key, done, total))
    engine.cancel("gone")
    engine.predict([TileJob(TINY_RRDB, tiles(10), request_id="gone", progress_key="j:0")])
    assert reports == [("j:0", 4, 10)]  # one chunk of 4, then nothing
    reports.clear()
    engine.cancel("gone")
    gone = TileJob(TINY_RRDB, tiles(6), request_id="gone", progress_key="j:0")
    engine.predict([gone, TileJob(TINY_RRDB, tiles(3), request_id="kept", progress_key="j:1")])
    assert reports[-1] == ("j:1", 3, 3) and engine.canceled == set()
