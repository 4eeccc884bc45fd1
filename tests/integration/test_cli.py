"""The ``pixserve`` CLI against the running service: several files, failures, status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT

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


def test_positional_output_file_is_written_as_cp_does(serve_url: str, tmp_path: Path) -> None:
    source, target = tmp_path / "in.png", tmp_path / "big.png"
    source.write_bytes(encode(astronaut(16)))
    target.write_bytes(encode(astronaut(8)))  # an existing OUT is replaced, not an input
    result = pixserve("upscale", str(source), str(target), "--url", serve_url)
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (64, 64) and f"{source} -> {target}" in result.stdout


def test_one_bad_file_fails_the_run_not_the_others(serve_url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(encode(astronaut(16)))
    bad.write_text("not an image")
    result = pixserve("upscale", str(good), str(bad), "-o", str(tmp_path), "--url", serve_url)
    assert result.returncode == 1
    assert "invalid_image" in result.stderr and (tmp_path / "good.upscaled.png").exists()


def test_every_task_from_the_shell(serve_url: str, tmp_path: Path) -> None:
    """Each sync task as a command, its output beside the input or where asked."""
    source = tmp_path / "a.png"
    source.write_bytes(encode(astronaut(32)))
    runs = {
        "a.denoised.png": ("denoise", str(source)),
        "a.converted.webp": ("convert", str(source), "--format", "webp", "--quality", "70"),
        "a.restored.png": ("restore-face", str(source), "--max-faces", "1"),
        "a.thumbnail-webp.webp": ("run", "thumbnail-webp", str(source)),
    }
    for name, args in runs.items():
        result = pixserve(*args, "--url", serve_url)
        assert result.returncode == 0, (args, result.stderr)
        assert Image.open(tmp_path / name).size[0] > 0
    caption = pixserve("caption", str(source), "--outputs", "caption", "--url", serve_url)
    assert caption.returncode == 0, caption.stderr
    assert json.loads(caption.stdout.splitlines()[0])["caption"]
    assert (tmp_path / "a.caption.json").exists()
    drawn = tmp_path / "cat.png"
    generated = pixserve("generate", "a cat", str(drawn), "--width", "256", "--height", "256",
                         "--steps", "2", "--seed", "4", "--url", serve_url)  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert "seed 4" in generated.stdout and Image.open(drawn).size == (256, 256)
    refused = pixserve("convert", str(source), "--resize", "fit", "--url", serve_url)
    assert refused.returncode == 1 and "error:" in refused.stderr  # fit needs a size


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


def test_submit_a_folder_wait_and_download(serve_url: str, tmp_path: Path) -> None:
    """A folder (nested, non-images skipped) split into two jobs, followed to the end."""
    folder = tmp_path / "batch"
    (folder / "nested").mkdir(parents=True)
    for index in range(4):
        (folder / f"a{index}.png").write_bytes(encode(astronaut(16 + index)))
    (folder / "nested" / "b.jpg").write_bytes(encode(astronaut(20), "JPEG"))
    (folder / "notes.txt").write_text("not an image")
    result = pixserve("submit", str(folder), "--model", TINY_COMPACT, "--max-items", "3",
                      "--wait", "-o", str(tmp_path / "out"), "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_ids = [line.split()[1].rstrip(":") for line in result.stdout.splitlines()
               if line.startswith("job ") and "items" in line]  # fmt: skip
    assert len(job_ids) == 2 and "5/5 items" in result.stderr
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == [f"a{i}.upscaled.png" for i in range(4)] + ["b.upscaled.png"]
    assert Image.open(tmp_path / "out" / "b.upscaled.png").size == (40, 40)

    shown = pixserve("jobs", "show", job_ids[0], "--url", serve_url)
    assert shown.returncode == 0 and f"job {job_ids[0]}: succeeded" in shown.stdout
    assert "3 done, 0 failed, 3 total" in shown.stdout
    listed = pixserve("jobs", "list", "--status", "succeeded", "--url", serve_url)
    assert all(job_id in listed.stdout for job_id in job_ids)
    again = pixserve("jobs", "download", job_ids[1], "-o", str(tmp_path / "again"), "--url",
                     serve_url)  # fmt: skip
    assert again.returncode == 0 and "saved 2 of 2 outputs" in again.stdout


def test_submit_failures_and_cancel(serve_url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(encode(astronaut(16)))
    bad.write_bytes(b"not a png")
    result = pixserve("submit", str(good), str(bad), "--model", TINY_COMPACT, "--wait",
                      "--url", serve_url)  # fmt: skip
    assert result.returncode == 1 and "item 1 (bad.png): invalid_image" in result.stderr
    assert ": partial" in result.stdout
    missing = pixserve("submit", str(tmp_path / "nope"), "--url", serve_url)
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    many = [str(good)] * 40
    submitted = pixserve("submit", *many, "--model", TINY_COMPACT, "--url", serve_url)
    job_id = submitted.stdout.split()[1].rstrip(":")
    canceled = pixserve("jobs", "cancel", job_id, "--url", serve_url)
    assert (canceled.returncode, canceled.stdout.strip()) == (0, f"job {job_id}: canceled") or (
        canceled.returncode == 1 and "succeeded" in canceled.stderr  # it finished first
    )
    again = pixserve("jobs", "cancel", job_id, "--url", serve_url)  # a no-op says so
    assert again.returncode == 1 and "nothing to cancel" in again.stderr
    unknown = pixserve("jobs", "show", "0" * 32, "--url", serve_url)
    assert unknown.returncode == 1 and "job_not_found" in unknown.stderr
    malformed = pixserve("jobs", "show", "doesnotexist", "--url", serve_url)
    assert malformed.returncode == 1 and "job_id" in malformed.stderr


def test_submit_any_task(serve_url: str, tmp_path: Path) -> None:
    """``submit --task`` runs any task as a job: captions of a folder as JSON files, and a
    generate job of prompts with no input files."""
    image = tmp_path / "a.png"
    image.write_bytes(encode(astronaut(24)))
    out = str(tmp_path / "captions")
    captioned = pixserve("submit", str(image), "--task", "caption", "--set", "outputs=caption",
                         "--wait", "-o", out, "--url", serve_url)  # fmt: skip
    assert captioned.returncode == 0, captioned.stderr
    assert (tmp_path / "captions" / "a.caption.json").read_text().startswith('{"caption": "')
    generated = pixserve("submit", "--task", "generate", "--prompt", "a cat", "--prompt", "a dog",
                         "--set", "width=256", "--set", "height=256", "--set", "steps=1",
                         "--wait", "-o", str(tmp_path / "gen"), "--url", serve_url)  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == [
        "a cat.generate.png", "a dog.generate.png"]  # fmt: skip
    refused = pixserve("submit", str(image), "--set", "scale=100", "--url", serve_url)
    assert refused.returncode != 0 and "scale: 100 is out of range" in refused.stderr
