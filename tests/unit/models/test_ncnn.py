"""The ncnn importer maps every byte of the shipped weights onto spandrel's architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import spandrel
import torch

from services.models import ncnn
from services.models.sources import ncnn_models_dir

MODELS = ncnn_models_dir()


def _load(state: dict[str, torch.Tensor]) -> spandrel.ModelDescriptor[torch.nn.Module]:
    return spandrel.ModelLoader().load_from_state_dict(state)


def test_x4plus_is_a_23_block_rrdbnet() -> None:
    state = ncnn.convert(MODELS / "realesrgan-x4plus.param", MODELS / "realesrgan-x4plus.bin")
    assert len([key for key in state if key.endswith(".weight")]) == 351
    assert state["conv_first.weight"].shape == (64, 3, 3, 3)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    descriptor = _load(state)
    assert descriptor.architecture.name == "ESRGAN" and descriptor.scale == 4


def test_anime_has_six_blocks() -> None:
    stem = MODELS / "realesrgan-x4plus-anime"
    state = ncnn.convert(stem.with_suffix(".param"), stem.with_suffix(".bin"))
    assert "body.5.rdb3.conv5.weight" in state and "body.6.rdb1.conv1.weight" not in state
    assert _load(state).scale == 4


def test_animevideov3_is_compact_with_prelu() -> None:
    stem = MODELS / "realesr-animevideov3-x4"
    state = ncnn.convert(stem.with_suffix(".param"), stem.with_suffix(".bin"))
    assert state["body.1.weight"].shape == (64,)  # PReLU slopes
    assert state["body.34.weight"].shape == (48, 64, 3, 3)
    descriptor = _load(state)
    assert descriptor.architecture.name == "RealESRGAN Compact" and descriptor.scale == 4


def test_truncated_bin_is_refused(tmp_path: Path) -> None:
    stem = MODELS / "realesr-animevideov3-x4"
    short = tmp_path / "short.bin"
    short.write_bytes(stem.with_suffix(".bin").read_bytes()[:-100])
    with pytest.raises(ncnn.NcnnFormatError, match="ends at"):
        ncnn.convert(stem.with_suffix(".param"), short)


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    stem = MODELS / "realesr-animevideov3-x4"
    long = tmp_path / "long.bin"
    long.write_bytes(stem.with_suffix(".bin").read_bytes() + b"\0" * 8)
    with pytest.raises(ncnn.NcnnFormatError, match="holds"):
        ncnn.convert(stem.with_suffix(".param"), long)


def test_wrong_tag_is_refused(tmp_path: Path) -> None:
    stem = MODELS / "realesr-animevideov3-x4"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0\0\0\0" + stem.with_suffix(".bin").read_bytes()[4:])
    with pytest.raises(ncnn.NcnnFormatError, match="tag"):
        ncnn.convert(stem.with_suffix(".param"), bad)


def test_not_a_param_file(tmp_path: Path) -> None:
    with pytest.raises(ncnn.NcnnFormatError, match="magic"):
        ncnn.parse_param("hello\n")
