"""``pixserve up`` gives Ray at least the CPUs the Serve config's minimum replicas
reserve, or a small machine could never place the graph."""

from __future__ import annotations

from typing import Any

from deployments.local import load_config, minimum_cpus


def test_minimum_cpus_sums_reservations_of_minimum_replicas() -> None:
    config: dict[str, Any] = {"applications": [{"deployments": [
        {"name": "A", "ray_actor_options": {"num_cpus": 0.5},
         "autoscaling_config": {"min_replicas": 3}},
        {"name": "B", "ray_actor_options": {"num_cpus": 0.25}, "num_replicas": 2},
        {"name": "C"},  # Serve's default: one CPU, one replica
    ]}]}  # fmt: skip
    assert minimum_cpus(config) == 3  # 1.5 + 0.5 + 1


def test_the_packaged_config_needs_more_than_two_cpus() -> None:
    """Ingress 0.5 + Dispatcher 0.25 + Codec 1 + Denoiser 1 + FaceRestorer 1 + Diffusion 1
    + Vision 1 + Upscaler 1 = 6.75."""
    assert minimum_cpus(load_config()) == 7
