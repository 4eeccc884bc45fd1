"""Progress inside a job item (tiles done, diffusion steps), from the model replica
doing the work to the job's event stream and envelope.

The Dispatcher names the item it runs in ``CURRENT_ITEM``; the backend attaches that
name to the model call (``progress_key``); the replica's engine reports each chunk or
step to a ``ProgressReporter``, which writes to Redis from the engine's own thread, at
most every ``interval_s`` per item (the last step always), so a fast model is not held
up by its reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextvars import ContextVar

import redis

from services.errors import PixserveError
from services.jobs.store import job_key

logger = logging.getLogger(__name__)
CURRENT_ITEM: ContextVar[str | None] = ContextVar("pixserve_current_item", default=None)
KEPT_S = 7 * 24 * 3600  # a progress record outlives no job: jobs are kept less long


def item_key(job_id: str, index: int) -> str:
    return f"{job_id}:{index}"


class ProgressReporter:
    """Writes ``progress`` events and the latest count of each item being worked on."""

    def __init__(self, client: redis.Redis | None, interval_s: float = 0.5) -> None:
        self.client, self.interval_s = client, interval_s
        self.sent: dict[str, float] = {}
        self.lock = threading.Lock()
        self.failing = False

    def report(self, key: str | None, step: int, steps: int, unit: str) -> None:
        """From any thread; a report for no item, or too soon after the last, is dropped."""
        if key is None or self.client is None:
            return
        now = time.monotonic()
        with self.lock:
            if step < steps and now - self.sent.get(key, 0.0) < self.interval_s:
                return
            self.sent[key] = now
            if step >= steps:
                self.sent.pop(key, None)
        job_id, _, index = key.rpartition(":")
        try:
            self._write(job_id, index, step, steps, unit)
        except (redis.RedisError, PixserveError) as exc:  # progress is a nicety: never fatal
            if not self.failing:
                logger.warning("progress of %s not recorded: %r", key, exc)
            self.failing = True
            return
        self.failing = False

    def _write(self, job_id: str, index: str, step: int, steps: int, unit: str) -> None:
        assert self.client is not None
        key = job_key(job_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(f"{key}:events", {"type": "progress", "index": index, "step": str(step),
                                        "steps": str(steps), "unit": unit},
                      maxlen=10_000, approximate=True)  # fmt: skip
            pipe.hset(f"{key}:progress", index,
                      json.dumps({"step": step, "steps": steps, "unit": unit}))  # fmt: skip
            pipe.expire(f"{key}:progress", KEPT_S)
            pipe.execute()
