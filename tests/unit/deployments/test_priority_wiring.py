"""The Dispatcher's backend marks its model calls as background work (the replicas'
priority gate lets sync requests go first); the Ingress's does not, and the Codec, which
has no batch queue, never gets the flag."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from deployments.backend import ServeBackend
from services.imaging.convert import ConvertOptions
from services.models.manifest import load_manifest
from services.models.tile_io import TileJob


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
