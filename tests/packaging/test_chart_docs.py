"""The chart's documentation and pins stay true: every value documented, table fresh,
Ray version equal to the project's pin."""

from __future__ import annotations

import re
import sys
import tomllib
from typing import Any

import yaml

from tests.packaging.chart import CHART, ROOT, run_tool


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        paths = []
        for key, value in node.items():
            paths += leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return [prefix]


def documented() -> list[str]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from chart_readme import documented_keys

    return [key for key, _ in documented_keys((CHART / "values.yaml").read_text())]


def test_every_value_is_documented() -> None:
    keys = documented()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = [
        path
        for path in leaf_paths(values)
        if not any(path == key or path.startswith(key + ".") for key in keys)
    ]
    assert undocumented == []


def test_values_table_is_fresh() -> None:
    code, output = run_tool(sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check")
    assert code == 0, output


def test_ray_version_matches_the_project_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_pin = next(dep for dep in project["dependencies"] if dep.startswith("ray[serve]"))
    lower = re.search(r">=([\d.]+)", ray_pin)
    assert lower is not None
    chart_ray = yaml.safe_load((CHART / "values.yaml").read_text())["rayVersion"]
    assert chart_ray.startswith(lower.group(1)), (chart_ray, ray_pin)
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == project["version"]
