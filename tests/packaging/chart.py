"""Render the Helm chart with Helm's own engine (helm-python-sdk), offline."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
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


CRDS = ROOT.parent / "shared" / "schemas" / "kuberay-v1.7.0"
KUBERAY_KINDS = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
OTHER_CRD_KINDS = {"PodMonitor"}  # Prometheus Operator: no schema offline


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / KUBERAY_KINDS[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


def validate_object(obj: dict[str, Any]) -> None:
    """Kubernetes' own schemas (strict), or KubeRay's CRD schema plus unknown-field check."""
    if obj["kind"] in KUBERAY_KINDS:
        jsonschema.validate(obj, crd_schema(obj["kind"]))
        assert unknown_fields(obj, crd_schema(obj["kind"])) == []
    elif obj["kind"] not in OTHER_CRD_KINDS:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def policy_violations(obj: dict[str, Any]) -> list[str]:
    """Containers without requests/limits, running as root, privileged, or unpinned."""
    problems = []
    for spec in pod_specs(obj):
        pod_non_root = spec.get("securityContext", {}).get("runAsNonRoot")
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            security = container.get("securityContext", {})
            name, _, tag = container["image"].rpartition(":")
            checks = {
                "requests and limits": bool(resources.get("requests") and resources.get("limits")),
                "runAsNonRoot": security.get("runAsNonRoot", pod_non_root) is True,
                "not privileged": not security.get("privileged", False),
                "no privilege escalation": security.get("allowPrivilegeEscalation") is False,
                "drops ALL capabilities": security.get("capabilities", {}).get("drop") == ["ALL"],
                "pinned image tag": bool(name and tag and tag != "latest" and "/" not in tag),
            }
            problems += [f"{where}: {rule}" for rule, ok in checks.items() if not ok]
    return problems


def run_tool(*command: str) -> tuple[int, str]:
    """Run a checker (a script's --check, yamllint, hadolint) in the repo; code and output."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout + result.stderr
