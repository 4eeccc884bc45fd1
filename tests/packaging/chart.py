"""Render the Helm chart with Helm's own engine (helm-python-sdk), offline."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pixserve"
VALUE_FILES = {
    "default": None,
    "ci": CHART / "ci" / "ci-values.yaml",
    "gpu": CHART / "ci" / "gpu-values.yaml",
}
KUBE_VERSION = "1.31.0"


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def values_of(name: str) -> dict[str, Any]:
    path = VALUE_FILES[name]
    return {} if path is None else dict(yaml.safe_load(path.read_text()))


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` (NOTES.txt left out)."""
    rendered = chart().render(values or {}, name="pix", namespace="pixserve", is_install=True)
    objects = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload, a Job, or a RayService's head and worker groups."""
    spec = obj.get("spec", {})
    if obj["kind"] == "RayService":
        cluster = spec["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [group["template"]["spec"] for group in groups]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys a structural CRD schema does not declare: the API server would prune them
    silently, so a typo there is a setting that never takes effect."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found
