"""The submission's weight check: refuses a missing model, reads state once up front,
then refreshes in the background so a submission never waits on a busy deployment."""

from __future__ import annotations

import asyncio

import pytest

from services.errors import ModelNotReady
from services.jobs.service import WeightCheck
from services.platform import DeploymentReadiness


class Source:
    """Readiness that reports ``missing`` and counts its reads; ``delay_s`` per read."""

    def __init__(self, missing: dict[str, str], delay_s: float = 0.0) -> None:
        self.missing, self.delay_s, self.reads = missing, delay_s, 0

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        return {"Upscaler": DeploymentReadiness(ready=False, missing=dict(self.missing))}


def test_a_missing_model_is_refused_and_others_pass() -> None:
    async def scenario() -> None:
        check = WeightCheck(Source({"x2plus": "not in the store: pixserve models pull x2plus"}))
        await check.check(["x4plus"])
        with pytest.raises(ModelNotReady, match="model: x2plus is not loaded: not in the store"):
            await check.check(["x4plus", "x2plus"])

    asyncio.run(scenario())


def test_state_is_refreshed_in_the_background_once_stale() -> None:
    async def scenario() -> None:
        source = Source({})
        check = WeightCheck(source, ttl_s=0.05)
        await check.check(["x2plus"])  # the first read is awaited
        source.missing, source.delay_s = {"x2plus": "gone"}, 0.2
        await asyncio.sleep(0.06)
        await asyncio.wait_for(check.check(["x2plus"]), 0.05)  # stale: not waited for
        assert source.reads == 2
        await asyncio.sleep(0.3)  # the background read has landed
        with pytest.raises(ModelNotReady):
            await check.check(["x2plus"])

    asyncio.run(scenario())


def test_without_readiness_nothing_is_refused() -> None:
    class Broken:
        async def readiness(self) -> dict[str, DeploymentReadiness]:
            raise ConnectionError("controller unreachable")

    async def scenario() -> None:
        await WeightCheck(object()).check(["x2plus"])
        await WeightCheck(Broken()).check(["x2plus"])

    asyncio.run(scenario())
