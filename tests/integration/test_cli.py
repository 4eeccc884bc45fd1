"""The ``pixserve`` CLI against the running service: several files, failures, status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def pixserve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from deployments.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def test_upscale_several_files(serve_url: str, tmp_path: Path) -> None:
    inputs = []
    for index, fmt in enumerate(["PNG", "JPEG", "WEBP"]):
        path = tmp_path / f"in{index}.{fmt.lower()}"
        path.write_bytes(encode(astronaut(24), fmt))
        inputs.append(str(path))
    result = pixserve(
        "upscale", *inputs, "-o", str(tmp_path / "out"), "--scale", "2", "--url", serve_url
    )
    assert result.returncode == 0, result.stderr
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == ["in0.upscaled.png", "in1.upscaled.png", "in2.upscaled.png"]
    assert all(Image.open(p).size == (48, 48) for p in outputs)
    assert "3/3 files" in result.stderr


def test_positional_output_file(serve_url: str, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(encode(astronaut(16)))
    result = pixserve("upscale", str(source), str(tmp_path / "big.png"), "--url", serve_url)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "big.png").size == (64, 64)


def test_one_bad_file_fails_the_run_not_the_others(serve_url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(encode(astronaut(16)))
    bad.write_text("not an image")
    result = pixserve("upscale", str(good), str(bad), "--url", serve_url)
    assert result.returncode == 1
    assert "invalid_image" in result.stderr and (tmp_path / "good.upscaled.png").exists()


def test_missing_file_and_unreachable_server(serve_url: str, tmp_path: Path) -> None:
    missing = pixserve("upscale", str(tmp_path / "nope.png"), "--url", serve_url)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (tmp_path / "a.png").write_bytes(encode(astronaut(8)))
    down = pixserve("upscale", str(tmp_path / "a.png"), "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_status(serve_url: str) -> None:
    result = pixserve("status", "--url", serve_url)
    assert result.returncode == 0 and "READY" in result.stdout
    broken = pixserve("status", "--url", f"{serve_url}/missing")
    assert broken.returncode == 1 and "waiting for x2plus" in broken.stdout
