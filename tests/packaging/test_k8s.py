"""k8s/: rendered from the chart without drift, builds with kustomize, valid, on policy."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.packaging.chart import ROOT, of_kind, policy_violations, run_tool, validate_object

pytestmark = pytest.mark.timeout(300)


def kustomize(path: str) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module", params=["k8s/base", "k8s/overlays/dev", "k8s/overlays/gpu"])
def built(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def test_manifests_are_rendered_from_the_chart() -> None:
    code, output = run_tool(sys.executable, str(ROOT / "scripts" / "render_k8s.py"), "--check")
    assert code == 0, output


def test_built_objects_are_valid_and_on_policy(built: list[dict[str, Any]]) -> None:
    assert {"Namespace", "RayService", "StatefulSet", "Ingress", "Service"} <= {
        obj["kind"] for obj in built
    }
    for obj in built:
        validate_object(obj)
        assert obj["metadata"].get("namespace", "pixserve") == "pixserve"
    assert [problem for obj in built for problem in policy_violations(obj)] == []


def test_dev_overlay_is_cpu_only() -> None:
    objects = kustomize("k8s/overlays/dev")
    text = yaml.safe_dump_all(objects)
    assert "nvidia.com/gpu" not in text and ":0.1.0-gpu" not in text
    service = of_kind(objects, "RayService")[0]
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu"] and groups[0]["maxReplicas"] == 1
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    deployments = serve["applications"][0]["deployments"]
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in deployments)
    assert "tls" not in of_kind(objects, "Ingress")[0]["spec"]


def test_gpu_overlay_uses_the_gpu_pool_with_tls() -> None:
    objects = kustomize("k8s/overlays/gpu")
    groups = of_kind(objects, "RayService")[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] == 1
    assert of_kind(objects, "Ingress")[0]["spec"]["tls"][0]["secretName"] == "pixserve-tls"
