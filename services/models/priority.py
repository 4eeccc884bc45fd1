"""Interactive requests before job items on a model replica.

A replica's batch queue is first come, first served: a sync request that arrives
behind a job's queued items waits for all of them. ``PriorityGate`` sits in front of
the queue: an interactive request enters at once; a background one (a job item)
enters only while fewer than ``background_slots`` background requests are inside, or
just one while any interactive request is inside, so a sync request waits for at most
the batch in progress and one more item, and a steady interactive load slows jobs to a
trickle without stopping them. Waiting job items still count as the replica's ongoing
requests, so autoscaling sees the backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    """Admission to one replica's batch queue."""

    def __init__(self, background_slots: int) -> None:
        self.background_slots = max(1, background_slots)
        self.interactive = 0
        self.background = 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def admit(self, background: bool) -> AsyncIterator[None]:
        """Inside the block, the request may queue for a batch."""
        async with self.changed:
            if background:
                await self.changed.wait_for(self._room_for_background)
                self.background += 1
            else:
                self.interactive += 1
        try:
            yield
        finally:
            async with self.changed:
                if background:
                    self.background -= 1
                else:
                    self.interactive -= 1
                self.changed.notify_all()

    def _room_for_background(self) -> bool:
        limit = 1 if self.interactive else self.background_slots
        return self.background < limit
