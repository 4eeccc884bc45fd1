"""Every script in load_tests/ runs, at a tiny size, as a user would run it: a refactor
that breaks a benchmark fails CI instead of rotting until someone measures.

This folder sorts before integration/, so these scripts start and stop their own Ray
clusters before the session's Serve apps take the machine's memory. Nothing here looks
at a timing; each run must finish and write its JSON report with every mode in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "bench_upscale.py": ["--model", "null", "--requests", "2", "--size", "48", "--rounds", "1",
                         "--tile-size", "32"],
    "bench_memory.py": ["--size", "64", "--formats", "jpeg"],
    "bench_memory_modes.py": ["--size", "32", "--images", "1"],
    "bench_jobs.py": ["--items", "4", "--size", "16", "--concurrency", "2"],
    "bench_load.py": ["--stage-s", "3", "--clients", "1,2", "--job-items", "6", "--size", "16",
                      "--settle-s", "5"],
}  # fmt: skip
GPU_CHECK = ROOT / "load_tests" / "gpu_check.sh"  # its dry run covers the scripts it calls
pytestmark = pytest.mark.timeout(600)


def test_every_script_is_covered() -> None:
    """Each bench script runs here, or inside the GPU check's dry run (below)."""
    scripts = {path.name for path in (ROOT / "load_tests").glob("bench_*.py")}
    in_gpu_check = {name for name in scripts if f"load_tests/{name}" in GPU_CHECK.read_text()}
    assert scripts == set(SCRIPTS) | in_gpu_check
    assert {"bench_codecs.py", "bench_models.py"} <= in_gpu_check


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = [sys.executable, str(ROOT / "load_tests" / script), *SCRIPTS[script], "--json",
               str(report)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=540, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = json.loads(report.read_text())
    assert written
    if script == "bench_memory_modes.py":  # every mode, the low one resting lightest
        rows = {row["mode"]: row for row in written["results"]}
        assert set(rows) == {"low", "balanced", "high"}
        assert rows["low"]["rest_rss_added_mb"] < rows["balanced"]["rest_rss_added_mb"]
    if script == "bench_upscale.py":  # (a), (b) and (c), the service's with both replicas
        results = written["results"]
        assert [r["mode"][0] for r in results] == ["a", "b", "c"]
        assert all(r["images_per_s"] > 0 for r in results)
        assert set(results[2]["cpu_s_per_image"]) == {"Ingress", "Upscaler"}


def test_gpu_check_dry_runs_on_cpu(tmp_path: Path) -> None:
    """``gpu_check.sh --cpu-smoke``: every step of the GPU check runs at a tiny size here
    (x4plus imported from the ncnn wheel) and the merged report holds each one's output."""
    env = {**os.environ, "OUT": str(tmp_path), "PY_SMOKE": sys.executable, "RAY_ADDRESS": ""}
    done = subprocess.run([str(GPU_CHECK), "--cpu-smoke"], env=env,
                          capture_output=True, text=True, timeout=540, check=False)  # fmt: skip
    log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + log[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = ["import-x4plus", "x4plus", "null-ceiling", "codecs", "faces", "sdxl", "mesh",
             "memory-modes"]  # fmt: skip
    assert report["exit_status"] == dict.fromkeys(steps, 0)
    assert set(report["results"]) == {"x4plus", "null", "codecs", "faces", "sdxl", "mesh",
                                      "memory_modes"}  # fmt: skip
    meshes = report["results"]["mesh"]["seconds_per_mesh"]
    assert set(meshes) == {"relief", "triposr"} and all(m["pixserve"] > 0 for m in meshes.values())
    x4plus = report["results"]["x4plus"]["results"]
    assert [r["mode"][0] for r in x4plus] == ["a", "b"] and all(
        r["images_per_s"] > 0 for r in x4plus
    )
