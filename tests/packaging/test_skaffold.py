"""skaffold.yaml (no skaffold binary here): it builds the chart's image and deploys the
chart with files that exist; dev builds the CPU variant and forwards the ports."""

from __future__ import annotations

from typing import Any

import yaml

from tests.packaging.chart import CHART, ROOT

CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def releases(section: dict[str, Any]) -> list[dict[str, Any]]:
    return list(section["deploy"]["helm"]["releases"])


def test_builds_the_image_the_chart_deploys() -> None:
    (artifact,) = CONFIG["build"]["artifacts"]
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert artifact["image"] == chart_values["image"]["repository"]
    assert (ROOT / artifact["docker"]["dockerfile"]).is_file()


def test_every_release_points_at_the_chart_and_existing_values() -> None:
    sections = [CONFIG, *CONFIG["profiles"]]
    for section in sections:
        for release in releases(section):
            assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
            assert all((ROOT / path).is_file() for path in release.get("valuesFiles", []))
            assert (
                "IMAGE_TAG_ghcr_io_pixserve_pixserve" in release["setValueTemplates"]["image.tag"]
            )


def test_profiles() -> None:
    profiles = {profile["name"]: profile for profile in CONFIG["profiles"]}
    assert set(profiles) == {"dev", "gpu"}
    dev = profiles["dev"]
    assert dev["patches"][0]["value"] == "cpu"
    assert {(f["resourceName"], f["port"]) for f in dev["portForward"]} == {
        ("pixserve", 8000),
        ("pixserve-head-svc", 8265),
    }
    assert releases(profiles["gpu"])[0]["valuesFiles"] == ["helm/pixserve/ci/gpu-values.yaml"]
