"""The work queue: a Redis stream of job items read through a consumer group.

At-least-once delivery: an item stays pending until a consumer acks it; items left
pending by a dead consumer are re-claimed (XAUTOCLAIM) once idle for the visibility
timeout; an item delivered ``max_deliveries`` times without an ack moves to the
dead-letter stream with its last error and is acked, so a poison item never blocks
the others. Exactly-once outcomes are the consumer's part: it writes outputs under
deterministic keys and records completion idempotently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from services.redis_text import as_text

logger = logging.getLogger(__name__)

STREAM = "pixserve:work"
DEAD_LETTER = "pixserve:work:dead"
GROUP = "dispatchers"
# The webhook outbox: events the job store records atomically with each outcome, sent
# by the dispatchers' webhook senders through the same at-least-once machinery.
OUTBOX = "pixserve:webhooks"
OUTBOX_DEAD_LETTER = "pixserve:webhooks:dead"
OUTBOX_GROUP = "senders"


@dataclass(frozen=True)
class WorkItem:
    """One delivery of a queued item: the stream entry id, its fields, how often sent."""

    entry_id: str
    job_id: str
    index: int
    deliveries: int

    @property
    def enqueued_at(self) -> float:
        """When the entry was added (stream ids start with a millisecond timestamp)."""
        return _stamp(self.entry_id)


class WorkQueue:
    """Enqueue, read, re-claim, ack and dead-letter entries of one stream (job items by
    default; the webhook outbox with ``stream=OUTBOX``)."""

    def __init__(
        self,
        redis: Redis,
        visibility_timeout_ms: int = 60_000,
        max_deliveries: int = 3,
        stream: str = STREAM,
        group: str = GROUP,
        dead_letter_stream: str = DEAD_LETTER,
    ) -> None:
        self.redis = redis
        self.visibility_timeout_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self.stream, self.group, self.dead_letter_stream = stream, group, dead_letter_stream

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, job_id: str, indices: range | list[int]) -> list[str]:
        """One stream entry per item, in one round trip."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for index in indices:
                pipe.xadd(self.stream, {"job": job_id, "item": str(index)})
            ids = await pipe.execute()
        return [as_text(entry) for entry in ids]

    async def read(
        self, consumer: str, count: int = 8, block_ms: int | None = 1000
    ) -> list[WorkItem]:
        """Stale items first (re-claimed from dead consumers), then new ones; waits up
        to ``block_ms`` for new ones (None: does not wait)."""
        items = await self.reclaim(consumer, count)
        if len(items) < count:
            answer: Any = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count - len(items), block=block_ms
            )
            for _, entries in answer or []:
                items += [_item(entry_id, fields, 1) for entry_id, fields in entries]
        return items

    async def reclaim(self, consumer: str, count: int) -> list[WorkItem]:
        """Take over entries idle longer than the visibility timeout."""
        result: Any = await self.redis.xautoclaim(
            self.stream,
            self.group,
            consumer,
            self.visibility_timeout_ms,
            start_id="0-0",
            count=count,
        )
        entries = [entry for entry in result[1] if entry and entry[1]]
        if not entries:
            return []
        counts = await self._delivery_counts([as_text(entry_id) for entry_id, _ in entries])
        return [_item(entry_id, fields, counts[as_text(entry_id)]) for entry_id, fields in entries]

    async def touch(self, consumer: str, entry_ids: list[StreamIdT]) -> None:
        """Reset the idle time of entries this consumer still works on (a heartbeat), so
        a slow but live consumer's entries are not re-claimed by another."""
        if entry_ids:
            await self.redis.xclaim(self.stream, self.group, consumer, 0, entry_ids, justid=True)

    async def ack(self, item: WorkItem) -> None:
        await self.redis.xack(self.stream, self.group, item.entry_id)

    async def exhausted(self, item: WorkItem) -> bool:
        """Whether this delivery is the last one allowed."""
        return item.deliveries >= self.max_deliveries

    async def dead_letter(self, item: WorkItem, reason: str) -> None:
        """Record the item and its reason in the dead-letter stream, then ack it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dead_letter_stream,
                {"job": item.job_id, "item": str(item.index), "reason": reason[:2000],
                 "deliveries": str(item.deliveries), "entry": item.entry_id},
            )  # fmt: skip
            pipe.xack(self.stream, self.group, item.entry_id)
            await pipe.execute()

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """Newest first; ``id`` is the dead-letter entry's id (to retry it by)."""
        entries: Any = await self.redis.xrevrange(self.dead_letter_stream, count=count)
        return [
            {"id": as_text(entry_id), **{as_text(k): as_text(v) for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    async def dead_letter_entry(self, entry_id: str) -> dict[str, str] | None:
        """One dead-letter entry's fields (None: no such entry)."""
        entries: Any = await self.redis.xrange(self.dead_letter_stream, entry_id, entry_id)
        if not entries:
            return None
        return {as_text(k): as_text(v) for k, v in entries[0][1].items()}

    async def redeliver(self, entry_id: str, fields: dict[str, str]) -> None:
        """Put a dead-letter entry back on the stream and drop it from the dead letters."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream, {"job": fields["job"], "item": fields["item"]})
            pipe.xdel(self.dead_letter_stream, entry_id)
            await pipe.execute()

    async def backlog(self) -> int:
        """Entries not yet acked: never delivered (the group's lag) plus in flight."""
        group = await self._group_info()
        return int(group.get("lag") or 0) + int(group["pending"]) if group else 0

    async def oldest_age_s(self) -> float:
        """Age of the oldest unfinished entry (pending, or not yet delivered), from its
        stream id's millisecond timestamp; 0 when nothing waits."""
        stamps = []
        group = await self._group_info()
        if group is None:
            return 0.0
        summary = await self.redis.xpending(self.stream, self.group)
        if summary["pending"] and summary["min"] is not None:
            stamps.append(_stamp(summary["min"]))
        if group:
            after = as_text(group["last-delivered-id"])
            first: Any = await self.redis.xrange(self.stream, f"({after}", "+", count=1)
            if first:
                stamps.append(_stamp(first[0][0]))
        return max(0.0, time.time() - min(stamps)) if stamps else 0.0

    async def position(self, entry_id: str, limit: int = 10_000) -> int | None:
        """How many entries wait before ``entry_id`` (0 once it is delivered; at most
        ``limit``, past which the count stops); None before any dispatcher started."""
        group = await self._group_info()
        if group is None:
            return None
        after = as_text(group["last-delivered-id"])
        if _stream_order(entry_id) <= _stream_order(after):
            return 0
        ahead: Any = await self.redis.xrange(self.stream, f"({after}", f"({entry_id}",
                                             count=limit)  # fmt: skip
        return len(ahead)

    async def dead_letter_count(self) -> int:
        return int(await self.redis.xlen(self.dead_letter_stream))

    async def pending_count(self) -> int:
        group = await self._group_info()
        return int(group["pending"]) if group else 0

    async def _group_info(self) -> dict[str, Any] | None:
        """This consumer group's XINFO GROUPS entry (None before it or its stream exists:
        a fresh Redis, before any dispatcher started)."""
        if not await self.redis.exists(self.stream):
            return None
        for group in await self.redis.xinfo_groups(self.stream):
            if as_text(group["name"]) == self.group:
                return dict(group)
        return None

    async def _delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry_id in entry_ids:
            rows = await self.redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            counts[entry_id] = int(rows[0]["times_delivered"]) if rows else 1
        return counts


class InFlight:
    """The entries one consumer is working on, each as a task, kept leased: a heartbeat
    resets their idle time so no other consumer re-claims a slow but live delivery."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._touched = 0.0

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.tasks

    def start(self, entry_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks[entry_id] = task
        task.add_done_callback(lambda done: self._done(entry_id, done))

    async def heartbeat(self, consumer: str) -> None:
        """Touch the entries in flight, at most every third of the visibility timeout."""
        if time.monotonic() - self._touched > self.queue.visibility_timeout_ms / 3000:
            await self.queue.touch(consumer, [*self.tasks])
            self._touched = time.monotonic()

    async def wait_any(self, timeout_s: float) -> None:
        """Until one entry finishes, or ``timeout_s``."""
        if self.tasks:
            await asyncio.wait([*self.tasks.values()], timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip

    async def drain(self) -> None:
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _done(self, entry_id: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(entry_id, None)
        if not task.cancelled() and task.exception() is not None:
            # left pending: re-claimed after the visibility timeout
            logger.error("entry %s failed: %r", entry_id, task.exception())


def _stream_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _stamp(entry_id: bytes | str) -> float:
    return int(as_text(entry_id).split("-")[0]) / 1000


def _item(entry_id: bytes | str, fields: dict[Any, Any], deliveries: int) -> WorkItem:
    data = {as_text(k): as_text(v) for k, v in fields.items()}
    return WorkItem(as_text(entry_id), data["job"], int(data["item"]), deliveries)
