"""Models unloaded and loaded at run time, on the tiny models: memory counted, an
unloaded model resting (not missing) and loaded again by its next request, idle ones
unloaded after a timeout, in the tile, vision and face engines alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.config import Settings
from services.models.faces import FaceEngine
from services.models.manifest import load_manifest
from services.models.residency import module_bytes, process_rss, release_memory
from services.models.store import ModelStore
from services.models.tile_io import TileJob
from services.models.upscaler import UpscaleEngine
from services.models.vision import VisionEngine
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_CAPTION, TINY_DETECTOR, TINY_GFPGAN, TINY_RRDB, TINY_TAGGER

pytestmark = pytest.mark.timeout(120)


def test_memory_counts_each_tensor_once() -> None:
    layer = torch.nn.Linear(10, 10)  # 110 float32 parameters
    assert module_bytes(layer) == 440
    assert module_bytes({"a": layer, "b": [layer, (layer,)]}) == 440  # shared: once
    norm = torch.nn.BatchNorm1d(10)  # 4 float32 vectors of 10, one int64 counter
    assert module_bytes(torch.nn.Sequential(layer, norm)) == 440 + 4 * 40 + 8
    assert module_bytes(None) == 0 and module_bytes("text") == 0
    assert process_rss() > 10 << 20
    release_memory(on_cuda=False)  # safe to call on CPU


def test_an_unloaded_tile_model_rests_and_loads_on_its_next_request(
    tiny_engine: UpscaleEngine,
) -> None:
    held = module_bytes(tiny_engine.models[TINY_RRDB].module)
    states = {s.name: s for s in tiny_engine.model_states({}, {})}
    assert states[TINY_RRDB].loaded and states[TINY_RRDB].memory_bytes == held > 0
    assert tiny_engine.unload_model(TINY_RRDB) and not tiny_engine.unload_model(TINY_RRDB)
    status = tiny_engine.status()
    assert TINY_RRDB not in status.loaded and status.resting == [TINY_RRDB]
    assert TINY_RRDB not in status.missing  # resting, not broken: readiness stays green
    state = {s.name: s for s in tiny_engine.model_states({}, {})}[TINY_RRDB]
    assert not state.loaded and state.memory_bytes == 0 and "next request" in str(state.detail)
    pixels = astronaut(16)
    (output,) = tiny_engine.predict([TileJob(TINY_RRDB, pixels)])
    assert not isinstance(output, Exception) and output.pixels is not None
    assert output.pixels.shape == (64, 64, 3)
    assert TINY_RRDB in tiny_engine.status().loaded and tiny_engine.status().resting == []
    assert tiny_engine.last_used[TINY_RRDB] > 0


def test_load_is_a_no_op_when_loaded_and_brings_back_an_unloaded_model(
    tiny_engine: UpscaleEngine,
) -> None:
    module = tiny_engine.models[TINY_RRDB].module
    tiny_engine.load_model(TINY_RRDB)
    assert tiny_engine.models[TINY_RRDB].module is module  # not loaded twice
    tiny_engine.unload_model(TINY_RRDB)
    tiny_engine.load_model(TINY_RRDB)
    assert TINY_RRDB in tiny_engine.models and not tiny_engine.unloaded


def test_idle_models_unload_after_the_timeout(tiny_engine: UpscaleEngine) -> None:
    assert tiny_engine.unload_idle(60.0, now=1000.0) == []  # never used: idle from now on
    tiny_engine.last_used[TINY_RRDB] = 2000.0
    unloaded = tiny_engine.unload_idle(60.0, now=1070.0 + 1000.0)
    assert TINY_RRDB in unloaded and len(tiny_engine.models) == 0


def test_a_role_engine_reloads_its_unloaded_model(tiny_store: tuple[Path, Path]) -> None:
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, caption_max_tokens=4,
                        caption_model=TINY_CAPTION, tag_model=TINY_TAGGER)  # fmt: skip
    engine = VisionEngine(settings, ModelStore(root, load_manifest(manifest)))
    engine.load()
    assert engine.configured_models() == [TINY_CAPTION, TINY_TAGGER]
    assert engine.unload_model(TINY_TAGGER) and "tags" not in engine.models
    assert engine.status().resting == [TINY_TAGGER]
    description = engine.describe(astronaut(32), {"tags"})
    assert description.tags is not None and "tags" in engine.models


def test_a_face_engine_unloads_a_detector_and_a_restorer(tiny_store: tuple[Path, Path]) -> None:
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, face_models=[TINY_GFPGAN],
                        default_face_model=TINY_GFPGAN, face_detectors=[TINY_DETECTOR],
                        default_face_detector=TINY_DETECTOR)  # fmt: skip
    engine = FaceEngine(settings, ModelStore(root, load_manifest(manifest)))
    engine.load()
    assert engine.unload_model(TINY_DETECTOR) and engine.unload_model(TINY_GFPGAN)
    assert engine.status().loaded == {} and engine.status().resting == sorted(
        [TINY_DETECTOR, TINY_GFPGAN])  # fmt: skip
    engine.detect(TINY_DETECTOR, np.zeros((64, 64, 3), np.uint8))
    assert TINY_DETECTOR in engine.detectors and TINY_GFPGAN not in engine.models


def test_memory_modes_set_the_tile_batch_and_what_is_resident(tiny_engine: UpscaleEngine) -> None:
    tiny_engine.set_memory_mode("low")
    assert {loaded.batch_limit for loaded in tiny_engine.models.values()} == {1}
    tiny_engine.unload_model(TINY_RRDB)
    tiny_engine.set_memory_mode("high")  # everything configured loaded
    assert TINY_RRDB in tiny_engine.models and not tiny_engine.unloaded
    assert tiny_engine.memory_mode == "high"
    tiny_engine.set_memory_mode("balanced")
    batch = tiny_engine.runtime.tile_batch
    assert {loaded.batch_limit for loaded in tiny_engine.models.values()} == {batch}
