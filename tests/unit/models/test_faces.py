"""The face engine on the tiny GFPGAN and CodeFormer: batching across requests, fixed
noise, the CodeFormer fidelity, OOM back-off and clear errors for absent models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.config import Settings
from services.errors import EngineOutOfMemory, ModelNotReady, NotConfigured
from services.models.faces import FaceCrops, FaceEngine, batch_buckets
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_BLIND_DETECTOR, TINY_CODEFORMER, TINY_DETECTOR, TINY_GFPGAN


@pytest.fixture(scope="module")
def engine(tiny_store: tuple[object, object]) -> FaceEngine:
    root, manifest = tiny_store
    settings = Settings(
        model_store=root, extra_manifest=manifest, face_batch_size=4,
        face_models=[TINY_GFPGAN, TINY_CODEFORMER, "gfpgan-v1.4"],
        face_detectors=[TINY_DETECTOR, TINY_BLIND_DETECTOR],
    )  # fmt: skip
    loaded = FaceEngine(settings, ModelStore(settings.model_store, load_manifest(manifest)))
    loaded.load()
    return loaded


def crops(count: int, seed: int = 0) -> np.ndarray:
    face = astronaut(512).astype(np.float32) / 255
    shifts = [np.roll(face, 8 * (seed + i), axis=1) for i in range(count)]
    return np.stack(shifts)


class _Recording(torch.nn.Module):
    """The real module, with the batch sizes it was called with; it may refuse batches
    above ``limit`` the way CUDA does when memory runs out."""

    def __init__(self, inner: torch.nn.Module, limit: int = 99) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, list[int]()

    def forward(self, batch: torch.Tensor, **kwargs: object) -> object:
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(batch, **kwargs)


@pytest.fixture
def recorded(engine: FaceEngine) -> _Recording:
    model = engine.models[TINY_GFPGAN]
    original = model.module
    model.module = wrapper = _Recording(original)
    yield wrapper
    model.module, model.batch_limit = original, 4


def test_faces_of_concurrent_requests_share_one_pass(
    engine: FaceEngine, recorded: _Recording
) -> None:
    first, second = (
        FaceCrops(TINY_GFPGAN, crops(1), request_id="a"),
        FaceCrops(TINY_GFPGAN, crops(2, seed=1), request_id="b"),
    )
    one, two = engine.restore([first, second])
    assert isinstance(one, np.ndarray) and one.shape == (1, 512, 512, 3)
    assert isinstance(two, np.ndarray) and two.shape == (2, 512, 512, 3)
    assert float(two.min()) >= 0.0 and float(two.max()) <= 1.0
    assert recorded.sizes == [3]
    last = engine.passes[-1]
    assert (last.model, last.faces, last.request_ids, last.capacity) == (TINY_GFPGAN, 3,
                                                                         ("a", "b"), 4)  # fmt: skip
    # fixed noise: the same face restores the same way every time
    (again,) = engine.restore([FaceCrops(TINY_GFPGAN, crops(1))])
    assert isinstance(again, np.ndarray)
    np.testing.assert_allclose(again, one, atol=1e-5)  # batch of 1 vs 3: float rounding


@pytest.mark.parametrize(
    ("limit", "buckets"),
    [(1, (1,)), (2, (1, 2)), (4, (1, 2, 4)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8))],
)
def test_compiled_batch_sizes(limit: int, buckets: tuple[int, ...]) -> None:
    assert batch_buckets(limit) == buckets


def test_a_chunk_is_padded_to_its_bucket_and_cut_back(
    engine: FaceEngine, recorded: _Recording
) -> None:
    """What a compiled GFPGAN gets: one face runs as a batch of two (its smallest bucket
    that holds it), the blank one dropped, the result that of an unpadded pass (one face:
    each 512 px pass of the published-size model costs seconds on a CPU)."""
    (plain,) = engine.restore([FaceCrops(TINY_GFPGAN, crops(1))])
    model = engine.models[TINY_GFPGAN]
    model.buckets = (2, 4)
    try:
        (padded,) = engine.restore([FaceCrops(TINY_GFPGAN, crops(1))])
    finally:
        model.buckets = ()
    assert recorded.sizes == [1, 2]
    assert isinstance(plain, np.ndarray) and isinstance(padded, np.ndarray)
    assert padded.shape == (1, 512, 512, 3)
    np.testing.assert_allclose(padded, plain, atol=1e-5)


def test_out_of_memory_halves_the_face_batch(engine: FaceEngine, recorded: _Recording) -> None:
    recorded.limit = 1
    (result,) = engine.restore([FaceCrops(TINY_GFPGAN, crops(2))])
    assert isinstance(result, np.ndarray) and len(result) == 2
    assert recorded.sizes == [2, 1, 1] and engine.models[TINY_GFPGAN].batch_limit == 1


def test_out_of_memory_at_one_face_fails_clearly(engine: FaceEngine, recorded: _Recording) -> None:
    recorded.limit = 0
    (result,) = engine.restore([FaceCrops(TINY_GFPGAN, crops(1))])
    assert isinstance(result, EngineOutOfMemory) and "one face" in result.message


def test_codeformer_fidelity_changes_the_result(engine: FaceEngine) -> None:
    low, high = engine.restore(
        [FaceCrops(TINY_CODEFORMER, crops(1), 0.0), FaceCrops(TINY_CODEFORMER, crops(1), 1.0)]
    )
    assert isinstance(low, np.ndarray) and isinstance(high, np.ndarray)
    assert low.shape == high.shape == (1, 512, 512, 3)
    assert float(np.abs(low - high).mean()) > 1e-4
    assert [p.faces for p in list(engine.passes)[-2:]] == [1, 1]  # one pass per weight


def test_absent_and_unconfigured_models_name_the_fix(engine: FaceEngine) -> None:
    assert "gfpgan-v1.4" in engine.status().missing
    absent, unconfigured = engine.restore(
        [FaceCrops("gfpgan-v1.4", crops(1)), FaceCrops("codeformer", crops(1))]
    )
    assert isinstance(absent, ModelNotReady)
    assert "pixserve models pull gfpgan-v1.4" in absent.message
    assert isinstance(unconfigured, NotConfigured)
    assert (
        "face_models" in unconfigured.message and "models pull codeformer" in unconfigured.message
    )
    with pytest.raises(NotConfigured, match="face_detectors"):
        engine.detect("retinaface-resnet50", astronaut(64))


def test_status_and_health(engine: FaceEngine) -> None:
    status = engine.status()
    assert status.device == "cpu" and status.dtype == "float32"
    assert set(status.loaded) == {TINY_GFPGAN, TINY_CODEFORMER, TINY_DETECTOR,
                                  TINY_BLIND_DETECTOR}  # fmt: skip
    assert engine.gpu_memory() == {}
    engine.check_health()
