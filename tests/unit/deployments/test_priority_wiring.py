"""The Dispatcher's backend marks its model calls as background work (the replicas'
priority gate lets sync requests go first); the Ingress's does not, and the Codec, which
has no batch queue, never gets the flag."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from deployments.backend import ServeBackend
from services.errors import EngineOutOfMemory
from services.imaging.convert import ConvertOptions
from services.models.manifest import load_manifest
from services.models.tile_io import TileJob, TileOutput
from services.telemetry.metrics import in_memory


class Method:
    def __init__(self, calls: list[tuple[str, dict[str, Any]]], name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.name, kwargs))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class Handle:
    """A deployment handle that records each method call's keyword arguments."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Method:
        return Method(self.calls, name)


def calls_of(background: bool) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    handles = {"Upscaler": Handle(calls), "Codec": Handle(calls)}
    backend = ServeBackend(handles, load_manifest(None), background=background)  # type: ignore[arg-type]

    async def run() -> None:
        await backend.upscale_image(TileJob("x4plus", np.zeros((4, 4, 3), np.uint8), (16, 16)))
        await backend.convert(b"", ConvertOptions())

    asyncio.run(run())
    return calls


def test_job_items_are_background_calls_and_sync_requests_are_not() -> None:
    assert calls_of(background=True) == [("upscale", {"background": True}), ("convert", {})]
    assert calls_of(background=False) == [("upscale", {}), ("convert", {})]


class Settled(Handle):
    """A deployment whose every call settles with ``outcome`` (an error is raised),
    recorded under ``label``."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], label: str, outcome: Any) -> None:
        super().__init__(calls)
        self.label, self.outcome = label, outcome

    def __getattr__(self, name: str) -> Method:
        handle = self

        class Settling(Method):
            def remote(self, *args: Any, **kwargs: Any) -> Any:
                handle.calls.append((handle.label, kwargs))
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                if isinstance(handle.outcome, Exception):
                    future.set_exception(handle.outcome)
                else:
                    future.set_result(handle.outcome)
                return future

        return Settling(self.calls, name)


OUT_OF_MEMORY = EngineOutOfMemory("out of GPU memory at one tile a pass")
CPU_ANSWER = TileOutput(np.zeros((16, 16, 3), np.uint8), None, 1)


def test_an_out_of_memory_request_runs_once_more_on_the_cpu_fallback() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    job = TileJob("x4plus", np.zeros((4, 4, 3), np.uint8), (16, 16))
    handles = {"Upscaler": Settled(calls, "oom", OUT_OF_MEMORY),
               "TileFallback": Settled(calls, "cpu", CPU_ANSWER)}  # fmt: skip
    metrics, recorded = in_memory()
    with_fallback = ServeBackend(handles, load_manifest(None), metrics=metrics)  # type: ignore[arg-type]
    output = asyncio.run(with_fallback.upscale_image(job))
    assert output.fallback == "cpu" and output.pixels is not None
    assert [name for name, _ in calls] == ["oom", "cpu"]  # once, not again and again
    assert recorded.metrics["pixserve_cpu_fallbacks_total"].get(model="x4plus") == 1
    without = ServeBackend({"Upscaler": Settled([], "oom", OUT_OF_MEMORY)}, load_manifest(None))  # type: ignore[dict-item]
    with pytest.raises(EngineOutOfMemory):  # off by default: the 503 stands
        asyncio.run(without.upscale_image(job))
