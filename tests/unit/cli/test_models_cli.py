"""``pixserve models`` on a real store directory; failures are one line and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIXSERVE_MODEL_STORE", str(tmp_path))
    return tmp_path


def test_import_then_list(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    assert "pixserve models import animevideov3" in capsys.readouterr().out
    assert main(["models", "import", "animevideov3"]) == 0
    assert (store / "realesr-animevideov3.ncnn.safetensors").is_file()
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("animevideov3"))
    assert "verified" in line and "1.3 MB" in line


def test_errors_are_one_line_and_exit_1(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", "x2plus"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: model 'x2plus' has no package source (it has: url)"
    )
    assert main(["models", "pull", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_invalid_setting_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIXSERVE_TILE_SIZE", "3")
    assert main(["models", "list"]) == 2
    assert "tile_size" in capsys.readouterr().err
