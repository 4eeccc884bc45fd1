"""``pixserve up`` gives Ray at least the CPUs the Serve config's minimum replicas
reserve, or a small machine could never place the graph."""

from __future__ import annotations

from typing import Any

from deployments.local import load_config, localize, minimum_cpus, without_unused_deployments


def test_minimum_cpus_sums_reservations_of_minimum_replicas() -> None:
    config: dict[str, Any] = {"applications": [{"deployments": [
        {"name": "A", "ray_actor_options": {"num_cpus": 0.5},
         "autoscaling_config": {"min_replicas": 3}},
        {"name": "B", "ray_actor_options": {"num_cpus": 0.25}, "num_replicas": 2},
        {"name": "C"},  # Serve's default: one CPU, one replica
    ]}]}  # fmt: skip
    assert minimum_cpus(config) == 3  # 1.5 + 0.5 + 1


def test_the_packaged_config_counts_only_deployments_in_use() -> None:
    """By default (upscaling only): Ingress 0.5 + Dispatcher 0.25 + Codec 1 + Upscaler 1
    = 2.75; with faces configured the FaceRestorer's 1 more. The Denoiser, Diffusion and
    Vision, with nothing to serve, are not in the app and reserve nothing."""
    assert minimum_cpus(load_config()) == 3
    faces = localize(load_config(), args={"face_models": ["gfpgan-v1.4"]})
    assert minimum_cpus(faces) == 4
    pruned = without_unused_deployments(faces)["applications"][0]["deployments"]
    assert [d["name"] for d in pruned] == ["Ingress", "Dispatcher", "Codec", "FaceRestorer",
                                           "Upscaler"]  # fmt: skip
