"""Progress inside a job item (tiles done, diffusion steps), from the model replica
doing the work to the job's event stream and envelope, with previews for live viewers.

The Dispatcher names the item it runs in ``CURRENT_ITEM``; the backend attaches that
name to the model call (``progress_key``); the replica's engine reports each chunk or
step to a ``ProgressReporter``, which writes to Redis from the engine's own thread, at
most every ``interval_s`` per item (the last step always), so a fast model is not held
up by its reports. While a client watches the job over the WebSocket channel (its
``watchers`` key is alive), each written report also renders the engine's preview: the
latest JPEG per item is kept in one key (overwritten, never queued) and a small
``preview`` event names it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextvars import ContextVar

import redis

from services.errors import PixserveError
from services.imaging.previews import Preview
from services.jobs.store import job_key

logger = logging.getLogger(__name__)
CURRENT_ITEM: ContextVar[str | None] = ContextVar("pixserve_current_item", default=None)
KEPT_S = 7 * 24 * 3600  # a progress record outlives no job: jobs are kept less long
PREVIEW_KEPT_S = 3600


def item_key(job_id: str, index: int) -> str:
    return f"{job_id}:{index}"


def watchers_key(job_id: str) -> str:
    """Alive (a short expiry, refreshed) while a client watches the job live."""
    return f"{job_key(job_id)}:watchers"


def live_preview_key(job_id: str, index: int | str) -> str:
    return f"{job_key(job_id)}:preview:{index}"


class ProgressReporter:
    """Writes ``progress`` events and the latest count of each item being worked on."""

    def __init__(self, client: redis.Redis | None, interval_s: float = 0.5) -> None:
        self.client, self.interval_s = client, interval_s
        self.sent: dict[str, float] = {}
        self.lock = threading.Lock()
        self.failing = False

    def report(
        self, key: str | None, step: int, steps: int, unit: str, preview: Preview | None = None
    ) -> None:
        """From any thread; a report for no item, or too soon after the last, is dropped.
        ``preview`` is rendered only when a client watches the job."""
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
            if preview is not None and self.client.exists(watchers_key(job_id)):
                self._write_preview(job_id, index, step, steps, preview())
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

    def _write_preview(self, job_id: str, index: str, step: int, steps: int, jpeg: bytes) -> None:
        assert self.client is not None
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(live_preview_key(job_id, index), jpeg, ex=PREVIEW_KEPT_S)
            pipe.xadd(f"{job_key(job_id)}:events", {"type": "preview", "index": index,
                                                     "step": str(step), "steps": str(steps)},
                      maxlen=10_000, approximate=True)  # fmt: skip
            pipe.execute()
