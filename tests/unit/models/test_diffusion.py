"""The diffusion engine on tiny random-weight SDXL repositories (diffusers' layout,
loaded with from_pretrained): seeds reproduce, schedulers differ, image-to-image keeps
the size, the safety checker screens, and bad options are named."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.errors import InvalidParameter, ModelNotReady
from services.models.diffusion import (
    Checkpoint,
    DiffusionEngine,
    GenerateOptions,
    GenerationStopped,
)
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from tests.utils.tiny_models import TINY_SAFETY, TINY_SDXL, TINY_SDXL_ANIME


def settings_for(tiny_store: tuple[Path, Path], **extra: object) -> Settings:
    root, manifest = tiny_store
    base = {"model_store": root, "extra_manifest": manifest, "safety_checker": TINY_SAFETY,
            "diffusion_checkpoints": {"realism": TINY_SDXL, "anime": TINY_SDXL_ANIME,
                                      "absent": "sdxl-base"}}  # fmt: skip
    return Settings(**{**base, **extra})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tiny_store: tuple[Path, Path]) -> DiffusionEngine:
    settings = settings_for(tiny_store)
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    loaded = DiffusionEngine(settings, store)
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def realism(engine: DiffusionEngine) -> Checkpoint:
    return engine.load_checkpoint("realism")


def options(**changes: object) -> GenerateOptions:
    base = {"prompt": "a lighthouse at dusk", "checkpoint": "realism", "width": 256,
            "height": 256, "steps": 2, "seed": 7}  # fmt: skip
    return GenerateOptions(**{**base, **changes})  # type: ignore[arg-type]


def test_a_seed_reproduces_and_schedulers_differ(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    first, again = engine.generate(realism, options()), engine.generate(realism, options())
    assert first.pixels.shape == (256, 256, 3) and first.pixels.dtype == np.uint8
    assert np.array_equal(first.pixels, again.pixels) and first.seed == 7 and not first.nsfw
    other = engine.generate(realism, options(scheduler="dpmpp_2m_karras"))
    assert np.abs(other.pixels.astype(int) - first.pixels).max() > 0
    unseeded = engine.generate(realism, options(seed=None))
    assert 0 <= unseeded.seed < 2**63


def test_the_low_memory_mode_slices_and_tiles_to_the_same_image(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    """The low mode decodes in VAE tiles (the random tiny VAE's seams show, so close,
    not equal); back in balanced, the VAE (shared by every pipeline made from the
    checkpoint) decodes whole again and the same seed gives the same image."""
    plain = engine.generate(realism, options())
    engine.set_memory_mode("low")
    try:
        low = engine.generate(realism, options())
        assert realism.pipeline.vae.use_tiling
    finally:
        engine.set_memory_mode("balanced")
    assert low.pixels.shape == plain.pixels.shape
    assert np.abs(low.pixels.astype(int) - plain.pixels).mean() < 16
    again = engine.generate(realism, options())
    assert not realism.pipeline.vae.use_tiling and np.array_equal(again.pixels, plain.pixels)


def test_a_set_stop_ends_the_loop_after_its_step(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    """The replica sets ``stop`` when its request is cancelled: the loop ends after the
    step it is in; an event never set changes nothing."""
    stop = threading.Event()
    assert np.array_equal(engine.generate(realism, options(), stop=stop).pixels,
                          engine.generate(realism, options()).pixels)  # fmt: skip
    stop.set()
    with pytest.raises(GenerationStopped, match="after step 1 of 8"):
        engine.generate(realism, options(steps=8), stop=stop)


def test_checkpoints_are_different_models(engine: DiffusionEngine, realism: Checkpoint) -> None:
    anime = engine.load_checkpoint("anime")
    assert anime.model == TINY_SDXL_ANIME
    a, b = engine.generate(realism, options()), engine.generate(anime, options())
    assert np.abs(a.pixels.astype(int) - b.pixels).max() > 0
    assert {TINY_SDXL, TINY_SDXL_ANIME, TINY_SAFETY} <= set(engine.status().loaded)


def test_image_to_image_keeps_the_size_rounded_to_8(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    start = np.random.default_rng(0).random((100, 90, 3), dtype=np.float32)
    result = engine.generate(realism, options(strength=0.5), image=start)
    assert result.pixels.shape == (96, 88, 3)


def test_the_safety_checker_blacks_out_and_flags(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    """Its concept thresholds set below any similarity: every image is flagged."""
    checker, _ = engine.safety
    saved = checker.concept_embeds_weights.data.clone()
    checker.concept_embeds_weights.data.fill_(-10.0)
    try:
        flagged = engine.generate(realism, options())
    finally:
        checker.concept_embeds_weights.data.copy_(saved)
    assert flagged.nsfw and not flagged.pixels.any()


def test_a_prompt_over_the_text_encoder_is_refused(
    engine: DiffusionEngine, realism: Checkpoint
) -> None:
    with pytest.raises(InvalidParameter, match=r"prompt is \d+ tokens; the text encoder reads 77"):
        engine.generate(realism, options(prompt="word " * 40))


def test_checkpoints_unknown_or_absent(engine: DiffusionEngine) -> None:
    with pytest.raises(InvalidParameter, match="unknown checkpoint 'nope'"):
        engine.load_checkpoint("nope")
    with pytest.raises(ModelNotReady, match="pixserve models pull sdxl-base"):
        engine.load_checkpoint("absent")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"width": 250}, "width 250 must be a multiple of 8"),
        ({"height": 4096}, "height 4096 must be a multiple of 8 from 256 to 1536"),
        ({"steps": 61}, "steps 61 is over the cap"),
        ({"guidance": 31.0}, "guidance"),
        ({"scheduler": "plms"}, "unknown scheduler 'plms'"),
        ({"strength": 0.0}, "strength"),
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x" * 2001}, "prompt is 2001 characters"),
        ({"seed": -1}, "seed"),
    ],
)
def test_options_out_of_range_are_named(changes: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidParameter, match=words):
        options(**changes).check(Settings())


def test_the_safety_checker_is_required_once_checkpoints_exist(
    tiny_store: tuple[Path, Path], realism: Checkpoint
) -> None:
    settings = settings_for(tiny_store, safety_checker="sd-safety-checker")
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    engine = DiffusionEngine(settings, store)
    engine.load()
    assert "sd-safety-checker" in engine.status().missing
    with pytest.raises(ModelNotReady, match="pixserve models pull sd-safety-checker"):
        engine.generate(realism, options())


def test_a_generation_keeps_the_checkpoints_precision(tiny_store: tuple[Path, Path]) -> None:
    """diffusers' from_pipe casts the shared modules to float32 unless told otherwise: on
    an H200 every generation turned the fp16 checkpoint back to fp32 (fp32 GEMMs in the
    profile). Here in bf16 on the CPU: after a generation the modules are still bf16."""
    import torch

    settings = settings_for(tiny_store, safety_checker=None)
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    engine = DiffusionEngine(settings, store)
    engine.dtype = torch.bfloat16  # what fp16 is on CUDA, for a CPU
    checkpoint = engine.load_checkpoint("realism")
    engine.generate(checkpoint, GenerateOptions("a cat", "realism", width=256, height=256,
                                                steps=1, seed=1))  # fmt: skip
    pipeline = checkpoint.pipeline
    assert {pipeline.unet.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype} == {
        torch.bfloat16
    }


def test_a_job_items_steps_are_reported(engine: DiffusionEngine, realism: Checkpoint) -> None:
    reports: list[tuple[str | None, int, int]] = []
    previews: list[bytes] = []

    def report(opts: GenerateOptions, done: int, steps: int, preview: Callable[[], bytes]) -> None:
        reports.append((opts.progress_key, done, steps))
        previews.append(preview())

    engine.on_step = report
    try:
        engine.generate(realism, options(steps=3))  # a sync request's: nothing reported
        engine.generate(realism, options(steps=3, progress_key="j:1"))
    finally:
        engine.on_step = None
    assert reports == [("j:1", 1, 3), ("j:1", 2, 3), ("j:1", 3, 3)]
    last = Image.open(io.BytesIO(previews[-1]))  # the latents (32x32) as RGB, 8x
    assert last.format == "JPEG" and last.size == (256, 256)


def test_image_to_image_needs_one_step_after_strength() -> None:
    """diffusers runs int(steps x strength) steps of image-to-image: none is refused
    here by name (it failed inside the pipeline, a 500, before)."""
    options(steps=2, strength=0.5).check(Settings(), image_to_image=True)
    with pytest.raises(InvalidParameter, match=r"steps x strength is 1 x 0\.6"):
        options(steps=1, strength=0.6).check(Settings(), image_to_image=True)
    options(steps=1, strength=0.6).check(Settings())  # text-to-image: strength unused
