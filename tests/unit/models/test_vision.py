"""The vision engine on tiny random-weight BLIP and ViT models saved with
``save_pretrained``: captions, tags by threshold, NSFW probability, answers, and the
503 naming what is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.config import Settings
from services.errors import InvalidParameter, ModelNotReady, NotConfigured
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.vision import Question, VisionEngine
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_CAPTION, TINY_NSFW, TINY_TAGGER, TINY_VQA


def engine_for(tiny_store: tuple[Path, Path], **models: object) -> VisionEngine:
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, caption_max_tokens=8,
                        **models)  # type: ignore[arg-type]  # fmt: skip
    engine = VisionEngine(settings, ModelStore(root, load_manifest(manifest)))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engine(tiny_store: tuple[Path, Path]) -> VisionEngine:
    return engine_for(tiny_store, caption_model=TINY_CAPTION, tag_model=TINY_TAGGER,
                      nsfw_model=TINY_NSFW, vqa_model=TINY_VQA, tag_threshold=0.3)  # fmt: skip


def test_describe_everything(engine: VisionEngine) -> None:
    described = engine.describe(astronaut(64), {"caption", "tags", "nsfw"})
    assert isinstance(described.caption, str) and described.caption
    assert described.tags is not None and described.nsfw is not None
    labels = {"person", "space", "flag", "cat", "suit"}
    assert all(tag.label in labels and tag.score >= 0.3 for tag in described.tags)
    assert [t.score for t in described.tags] == sorted((t.score for t in described.tags),
                                                       reverse=True)  # fmt: skip
    assert 0.0 <= described.nsfw <= 1.0
    again = engine.describe(astronaut(64), {"caption"})
    assert again.caption == described.caption and again.tags is None and again.nsfw is None


def test_answers_count_their_tokens(engine: VisionEngine) -> None:
    answer = engine.answer(astronaut(64), Question("what color?", 4))
    assert isinstance(answer.text, str) and answer.prompt_tokens >= 3
    assert 1 <= answer.answer_tokens <= 6


def test_a_streamed_answer_comes_in_pieces_that_make_the_whole(engine: VisionEngine) -> None:
    pieces: list[str] = []
    answer = engine.answer(astronaut(64), Question("what color?", 8), pieces.append)
    assert "".join(pieces) == answer.text and len(pieces) >= 2


def test_sampling_follows_the_temperature(engine: VisionEngine) -> None:
    greedy = {engine.answer(astronaut(64), Question("what?", 8)).text for _ in range(2)}
    assert len(greedy) == 1  # temperature 0 decodes greedily: the same answer
    hot = {engine.answer(astronaut(64), Question("what?", 8, 2.0)).text for _ in range(4)}
    assert len(hot) > 1  # sampled: random weights at a high temperature vary


def test_unknown_outputs_are_named(engine: VisionEngine) -> None:
    with pytest.raises(InvalidParameter, match="unknown outputs"):
        engine.describe(astronaut(32), {"faces"})


def test_missing_and_unconfigured_models(tiny_store: tuple[Path, Path]) -> None:
    engine = engine_for(tiny_store, caption_model="blip-caption")
    assert "blip-caption" in engine.status().missing
    with pytest.raises(ModelNotReady, match="pixserve models pull blip-caption"):
        engine.describe(astronaut(32), {"caption"})
    with pytest.raises(NotConfigured, match="no vqa model is configured: set vqa_model"):
        engine.answer(astronaut(32), Question("what?", 4))


def test_a_model_of_another_role_is_refused(tiny_store: tuple[Path, Path]) -> None:
    engine = engine_for(tiny_store, nsfw_model=TINY_TAGGER)
    assert "is a tags model, not a nsfw model" in engine.status().missing[TINY_TAGGER]
    pixels = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ModelNotReady):
        engine.describe(pixels, {"nsfw"})
