"""A Dispatcher in a process of its own that SIGKILLs itself at a chosen point, for the
chaos tests: right after an item's output is written (``output``), or after its
outcome is recorded but before the queue entry is acked (``record``).

The Dispatcher, Redis, the store and the engine are the real ones; only the two seams
where the process dies are wrapped here, so the kill lands exactly in the window the
test is about instead of somewhere random. Run as
``python -m tests.utils.dispatcher_process REDIS_URL OBJECTS MODELS MANIFEST POINT``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from redis.asyncio import Redis

from services.config import Settings
from services.jobs.dispatcher import Dispatcher
from services.jobs.queue import WorkItem, WorkQueue
from services.jobs.store import JobStore
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.storage.base import Area
from services.storage.files import FileObjectStore
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB

POINTS = ("output", "record")


def die() -> None:
    """What a node failure or the OOM killer does: no cleanup, no goodbye."""
    os.kill(os.getpid(), signal.SIGKILL)


class DyingStore(FileObjectStore):
    """Dies as soon as an output object is on disk."""

    def put(self, area: Area, key: str, data: bytes, content_type: str) -> None:
        super().put(area, key, data, content_type)
        if area == "outputs":
            die()


class DyingQueue(WorkQueue):
    """Dies instead of acking (the outcome is recorded by then)."""

    async def ack(self, item: WorkItem) -> None:
        die()


async def main(redis_url: str, objects: Path, models: Path, manifest: Path, point: str) -> None:
    settings = Settings(
        model_store=models, extra_manifest=manifest, models=[TINY_RRDB, TINY_COMPACT],
        default_model=TINY_RRDB, tile_size=32, tile_pad=20,
    )  # fmt: skip
    known = load_manifest(manifest)
    engine = UpscaleEngine(settings, ModelStore(models, known))
    engine.load()
    redis = Redis.from_url(redis_url)
    store = DyingStore(objects) if point == "output" else FileObjectStore(objects)
    queue_type = DyingQueue if point == "record" else WorkQueue
    queue = queue_type(redis, visibility_timeout_ms=200, max_deliveries=3)

    async def load(name: str) -> bytes:
        return store.get("inputs", name)

    dispatcher = Dispatcher(JobStore(redis), queue, store, EngineBackend(engine), known,
                            settings, load)  # fmt: skip
    while True:  # one item at a time until the seam kills the process
        await dispatcher.run_once("doomed", batch=1, block_ms=200)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("redis_url")
    parser.add_argument("objects", type=Path)
    parser.add_argument("models", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("point", choices=POINTS)
    args = parser.parse_args()
    asyncio.run(main(args.redis_url, args.objects, args.models, args.manifest, args.point))
