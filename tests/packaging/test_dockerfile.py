"""The Dockerfile's promises, checked statically (no Docker engine here): pinned bases,
Ray pinned to the project's version, a non-root final stage without build tools."""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

from tests.packaging.chart import ROOT, run_tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    return {re.search(r" AS (\S+)", part.splitlines()[0]).group(1): part for part in parts}  # type: ignore[union-attr]


def test_base_images_are_pinned() -> None:
    for line in re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.M):
        if line.startswith(("base", "$")):
            continue
        assert ":" in line and not line.endswith(":latest"), line


def test_ray_version_is_the_projects() -> None:
    pin = re.search(r"ARG RAY_VERSION=(\S+)", DOCKERFILE)
    assert pin is not None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray = next(dep for dep in project["dependencies"] if dep.startswith("ray[serve]"))
    assert pin.group(1).startswith(re.search(r">=([\d.]+)", ray).group(1))  # type: ignore[union-attr]
    assert '"ray[serve]==${RAY_VERSION}"' in DOCKERFILE


def test_final_stage_is_unprivileged_and_lean() -> None:
    final = stages()["runtime"]
    assert re.search(r"^USER 1000:100$", final, flags=re.M)
    assert not re.search(r"build-essential|gcc|g\+\+|python3-dev", DOCKERFILE)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert ".pth" not in final and "models pull" not in final  # weights are never baked in


def test_dockerignore_keeps_secrets_and_weights_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignored)


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    code, output = run_tool(binary, "--config", str(ROOT / ".hadolint.yaml"), "Dockerfile")
    assert code == 0, output
