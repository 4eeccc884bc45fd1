"""The chart renders and lints cleanly, its objects are valid Kubernetes and KubeRay, and
its defaults follow the platform's policies. No cluster needed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from services.config import Settings
from services.registry import OPTIONAL_DEPLOYMENTS, deployments_in_use
from tests.packaging.chart import (
    CHART,
    KUBE_VERSION,
    ROOT,
    VALUE_FILES,
    crd_schema,
    of_kind,
    pod_specs,
    policy_violations,
    render,
    run_tool,
    unknown_fields,
    validate_object,
    values_of,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=sorted(VALUE_FILES))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(values_of(request.param))


def test_lint_reports_no_errors() -> None:
    report = helm_python.lint(str(CHART), strict=False, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert all(message["severity"] < 3 for message in report["messages"]), report


def test_objects_are_valid_kubernetes(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        validate_object(obj)


def test_objects_follow_the_policies(objects: list[dict[str, Any]]) -> None:
    assert [problem for obj in objects for problem in policy_violations(obj)] == []


def test_policy_check_catches_violations() -> None:
    job = of_kind(render(), "Job")[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "ghcr.io/pixserve/pixserve:latest"
    container["securityContext"]["privileged"] = True
    del container["resources"]["limits"]
    assert len(policy_violations(job)) == 3


def test_gpu_worker_group_requests_gpus() -> None:
    service = of_kind(render(values_of("gpu")), "RayService")[0]
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    container = groups["gpu"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert groups["gpu"]["template"]["spec"]["tolerations"]
    assert groups["gpu"]["template"]["spec"]["nodeSelector"]


def test_cpu_values_have_no_gpu_group() -> None:
    service = of_kind(render(values_of("ci")), "RayService")[0]
    groups = [g["groupName"] for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert groups == ["cpu"]


def test_head_runs_no_replicas_and_autoscaling_is_on(objects: list[dict[str, Any]]) -> None:
    cluster = of_kind(objects, "RayService")[0]["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True


def test_packaged_serve_config_is_the_apps() -> None:
    """One source of truth: the chart's copy is byte-identical to the app's config."""
    chart_copy = (CHART / "files" / "serve_config.yaml").read_text()
    assert chart_copy == (ROOT / "deployments" / "serve_config.yaml").read_text()


def test_serve_config_v2_is_the_apps_with_values_applied() -> None:
    app_config = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    service = of_kind(render(values_of("gpu")), "RayService")[0]
    rendered = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(rendered)
    (app,) = rendered["applications"]
    (expected,) = app_config["applications"]
    assert app["import_path"] == expected["import_path"] and app["name"] == expected["name"]
    used = deployments_in_use(Settings(**app["args"]))
    assert [d["name"] for d in app["deployments"]] == [
        d["name"] for d in expected["deployments"]
        if d["name"] not in OPTIONAL_DEPLOYMENTS or d["name"] in used
    ]  # fmt: skip
    upscaler = next(d for d in app["deployments"] if d["name"] == "Upscaler")
    assert upscaler["ray_actor_options"]["num_gpus"] == 0.25
    assert upscaler["autoscaling_config"]["min_replicas"] == 2
    assert upscaler["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}
    assert upscaler["health_check_period_s"] == 10  # untouched config values survive
    assert app["args"]["models"] == ["x4plus", "x4plus-anime"] and app["args"]["compile"] is True


SERVING_VALUES = [
    ("Denoiser", {"denoise_models": ["scunet-color"]}),
    ("FaceRestorer", {"face_models": ["gfpgan-v1.4"]}),
    ("Diffusion", {"diffusion_checkpoints": {"realism": "sdxl-base"}}),
    *(("Vision", {field: "blip-caption"}) for field in
      ("caption_model", "tag_model", "nsfw_model", "vqa_model")),
    ("TileFallback", {"cpu_fallback": True}),
]  # fmt: skip


@pytest.mark.parametrize(("deployment", "settings"), SERVING_VALUES)
def test_a_model_deployment_is_rendered_once_its_settings_configure_it(
    deployment: str, settings: dict[str, Any]
) -> None:
    """The chart leaves out exactly the deployments the app leaves out of its graph."""

    def rendered(values: dict[str, Any]) -> set[str]:
        service = of_kind(render({"settings": values}), "RayService")[0]
        (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
        assert {d["name"] for d in app["deployments"]} >= {"Ingress", "Dispatcher", "Codec"}
        return {d["name"] for d in app["deployments"]} & set(OPTIONAL_DEPLOYMENTS)

    assert rendered({}) == deployments_in_use(Settings()) == {"Upscaler"}
    assert deployment in rendered(settings) == deployments_in_use(Settings(**settings))


def test_serve_config_args_are_valid_settings() -> None:
    service = of_kind(render(values_of("gpu")), "RayService")[0]
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert Settings(**app["args"]).model_store == Path("/models")


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"deployments": {"Upscaler": {"numGpus": 1.5}}}, "maximum"),
        ({"deployments": {"Upscaler": {"autoscaling": {"minReplicas": -1}}}}, "minimum"),
        ({"workers": {"gpu": {"maxReplicas": -2}}}, "minimum"),
        ({"deployments": {"Upscaler": {"numGpu": 1}}}, "additional properties"),
        ({"unknownKey": True}, "additional properties"),
        ({"image": {"tag": "latest"}}, "not"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], words: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=words):
        render(values)


def test_network_policies_guard_serve_and_redis() -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind(render(), "NetworkPolicy")}
    ray = policies["pix-pixserve-ray"]["spec"]["ingress"]
    assert ray[0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert ray[0]["from"][0]["namespaceSelector"]["matchLabels"]
    redis = policies["pix-pixserve-redis"]["spec"]
    assert redis["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert redis["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["pixserve.io/ray-node"]


def test_secrets_are_not_in_values_and_redis_uses_one() -> None:
    objects = render()
    (secret,) = of_kind(objects, "Secret")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    existing = render({"redis": {"existingSecret": "my-redis"}})
    assert not of_kind(existing, "Secret")
    cluster = of_kind(existing, "RayService")[0]["spec"]["rayClusterConfig"]
    ref = cluster["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-redis", "key": "redis-password"}


def test_grafana_dashboards_are_valid_json() -> None:
    maps = [m for m in of_kind(render(), "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert maps
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for text in config_map["data"].values():
            assert json.loads(text)["panels"]


def test_yamllint_passes() -> None:
    config = str(ROOT / ".yamllint.yaml")
    code, output = run_tool(
        sys.executable, "-m", "yamllint", "-c", config, "helm", "k8s", "skaffold.yaml"
    )
    assert code == 0, output


def test_the_validators_catch_mistakes() -> None:
    """The checks above can fail: a typo'd field is refused by both validators."""
    objects = render()
    service = of_kind(objects, "RayService")[0]
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, crd_schema("RayService"))
    assert unknown_fields(service, crd_schema("RayService")) == [
        ".spec.rayClusterConfig.headGroupSpec.rayStartParam"
    ]
    ingress = of_kind(objects, "Ingress")[0]
    ingress["spec"]["rules"][0]["hosts"] = ["typo"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)


def test_api_keys_are_on_and_redis_is_wired() -> None:
    service = of_kind(render(), "RayService")[0]
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["api_keys_enabled"] is True
    assert app["args"]["redis_url"] == "redis://pix-pixserve-redis:6379/1"
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    env = {item["name"]: item for item in head["containers"][0]["env"]}
    secret = env["PIXSERVE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "pix-pixserve-redis", "key": "redis-password"}
    assert "password" not in service["spec"]["serveConfigV2"]


def test_object_storage_points_at_minio_when_bundled() -> None:
    service = of_kind(render(values_of("gpu")), "RayService")[0]
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["storage_url"] == "s3://"
    assert app["args"]["s3_endpoint_url"] == "http://pix-pixserve-minio:9000"
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    env = {item["name"]: item for item in head["containers"][0]["env"]}
    ref = env["PIXSERVE_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pix-pixserve-minio", "key": "root-password"}


def test_tracing_exports_over_otlp_to_the_collector() -> None:
    objects = render()
    service = of_kind(objects, "RayService")[0]
    rendered = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(rendered)
    assert rendered["tracing_config"] == {
        "enabled": True, "exporter_import_path": "deployments.tracing:otlp_exporter",
        "sampling_ratio": 0.05,
    }  # fmt: skip
    module, _, function = rendered["tracing_config"]["exporter_import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    env = {e["name"]: e.get("value") for pod in pod_specs(service) for c in pod["containers"]
           for e in c.get("env", [])}  # fmt: skip
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith("-otel-collector:4318")  # OTLP/HTTP
    # what Serve falls back to when a restarted controller lost the deployed tracing_config
    assert env["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"] == "deployments.tracing:otlp_exporter"
    assert env["RAY_SERVE_TRACING_SAMPLING_RATIO"] == "0.05"
    collector = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("otel-collector")
    ]
    assert 4318 in [port["port"] for port in collector[0]["spec"]["ports"]]
    off = of_kind(render({"tracing": {"enabled": False}}), "RayService")[0]
    assert "tracing_config" not in yaml.safe_load(off["spec"]["serveConfigV2"])
    off_env = {e["name"] for pod in pod_specs(off) for c in pod["containers"]
               for e in c.get("env", [])}  # fmt: skip
    assert "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH" not in off_env
