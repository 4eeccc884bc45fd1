"""Device work that stops when its caller is cancelled (``run_until_cancelled``)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.models.runtime import run_until_cancelled

pytestmark = pytest.mark.timeout(30)


def test_the_result_comes_back() -> None:
    assert asyncio.run(run_until_cancelled(lambda stop: 6 * 7)) == 42


def test_a_cancelled_caller_stops_the_work_and_waits_for_it() -> None:
    events: list[str] = []
    started = threading.Event()

    def work(stop: threading.Event) -> None:
        started.set()
        while not stop.wait(0.01):  # a denoising loop checking between steps
            pass
        time.sleep(0.2)  # the step in progress finishes
        events.append("work stopped")

    async def scenario() -> None:
        caller = asyncio.create_task(run_until_cancelled(work))
        await asyncio.to_thread(started.wait, 10)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        events.append("cancellation seen")

    asyncio.run(scenario())
    assert events == ["work stopped", "cancellation seen"]  # the slot is freed after
