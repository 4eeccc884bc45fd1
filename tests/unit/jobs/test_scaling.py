"""The Dispatcher's autoscaling arithmetic and policy: replicas follow the backlog."""

from __future__ import annotations

import pytest
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from deployments.autoscaling import BACKLOG_METRIC, queue_backlog_policy
from services.jobs.scaling import replicas_for_backlog


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [(0, 1), (1, 1), (64, 1), (65, 2), (200, 4), (10_000, 4), (-3, 1)],
)
def test_one_replica_per_target_items_within_bounds(backlog: float, expected: int) -> None:
    assert replicas_for_backlog(backlog, 64, 1, 4) == expected


def test_zero_minimum_lets_an_empty_queue_scale_to_zero() -> None:
    assert replicas_for_backlog(0, 64, 0, 4) == 0


def context(reports: dict[str, float], current: int = 1) -> AutoscalingContext:
    config = AutoscalingConfig(min_replicas=1, max_replicas=3, target_ongoing_requests=40)
    return AutoscalingContext(
        deployment_id=None, deployment_name="Dispatcher", app_name="pixserve",  # type: ignore[arg-type]
        current_num_replicas=current, target_num_replicas=current, running_replicas=[],
        total_num_requests=0, total_queued_requests=0,
        aggregated_metrics={BACKLOG_METRIC: reports} if reports else {}, raw_metrics={},
        capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=3,
        policy_state={"kept": True}, last_scale_up_time=None, last_scale_down_time=None,
        current_time=0.0, config=config,
    )  # fmt: skip


def test_policy_reads_the_backlog_every_replica_reports() -> None:
    wanted, state = queue_backlog_policy(context({"r1": 100.0, "r2": 95.0}))
    assert wanted == 3 and state == {"kept": True, "backlog": 100.0}  # max, not the sum
    assert queue_backlog_policy(context({"r1": 0.0}, current=3))[0] == 1
    assert queue_backlog_policy(context({}))[0] == 1  # no reports yet: the minimum
