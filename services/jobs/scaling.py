"""How many dispatcher replicas a work-queue backlog calls for (the Serve autoscaling
policy in deployments/ applies it; the arithmetic lives here, free of Ray)."""

from __future__ import annotations

import math


def replicas_for_backlog(backlog: float, per_replica: float, lowest: int, highest: int) -> int:
    """One replica per ``per_replica`` queued or running items, within the bounds."""
    wanted = math.ceil(max(backlog, 0.0) / max(per_replica, 1e-9))
    return max(lowest, min(highest, wanted))
