"""Serve autoscaling policy for the Dispatcher: replicas follow the work queue's backlog.

Dispatchers receive no requests, so Serve's request-based policy would never move
them. Each replica reports the backlog (``record_autoscaling_stats``); this policy,
named in the Serve config, asks for one replica per ``target_ongoing_requests`` items.
Serve's wrapper around custom policies applies min/max replicas and the upscale and
downscale delays.
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext

from services.jobs.scaling import replicas_for_backlog

BACKLOG_METRIC = "queue_backlog"


def queue_backlog_policy(ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
    reports = (ctx.aggregated_metrics or {}).get(BACKLOG_METRIC, {})
    backlog = max(reports.values(), default=0.0)  # every replica sees the same queue
    per_replica = float(getattr(ctx.config, "target_ongoing_requests", None) or 64)
    wanted = replicas_for_backlog(
        backlog, per_replica, ctx.capacity_adjusted_min_replicas,
        ctx.capacity_adjusted_max_replicas,
    )  # fmt: skip
    return wanted, {**ctx.policy_state, "backlog": backlog}
