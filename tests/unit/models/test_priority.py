"""The priority gate: job items never queue ahead of an interactive request by more
than one item, and still progress under a steady interactive load."""

from __future__ import annotations

import asyncio

from services.models.priority import PriorityGate


class Batcher:
    """A replica's FIFO batch queue, one request at a time; records the order served."""

    def __init__(self, gate: PriorityGate) -> None:
        self.gate, self.served, self.lock = gate, list[str](), asyncio.Lock()

    async def call(self, name: str, background: bool) -> None:
        async with self.gate.admit(background), self.lock:
            await asyncio.sleep(0.01)  # the forward pass
            self.served.append(name)


def test_an_interactive_request_overtakes_queued_job_items() -> None:
    async def scenario() -> list[str]:
        batcher = Batcher(PriorityGate(background_slots=2))
        jobs = [asyncio.create_task(batcher.call(f"job{i}", True)) for i in range(20)]
        await asyncio.sleep(0.015)  # the job items are queued and one is running
        await batcher.call("sync", False)
        await asyncio.gather(*jobs)
        return batcher.served

    served = asyncio.run(scenario())
    assert served.index("sync") <= 3, served  # behind at most the admitted items
    assert sorted(served) == sorted([f"job{i}" for i in range(20)] + ["sync"])


def test_job_items_trickle_through_a_steady_interactive_load() -> None:
    async def scenario() -> list[str]:
        batcher = Batcher(PriorityGate(background_slots=4))
        stop = asyncio.Event()

        async def interactive_load() -> None:
            n = 0
            while not stop.is_set():
                await asyncio.gather(*(batcher.call(f"sync{n}-{k}", False) for k in range(3)))
                n += 1

        load = asyncio.create_task(interactive_load())
        await asyncio.sleep(0.005)
        await asyncio.wait_for(
            asyncio.gather(*(batcher.call(f"job{i}", True) for i in range(3))), 30
        )
        stop.set()
        await load
        return batcher.served

    served = asyncio.run(scenario())
    assert {"job0", "job1", "job2"} <= set(served)
