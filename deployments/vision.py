"""The Vision deployment: caption, tags, NSFW score and visual questions, one image per
call (the models are small next to diffusion; replicas scale on ongoing requests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from deployments.logs import structured_logs
from deployments.replica import EngineReplica, gpu_share
from services.config import Settings
from services.imaging.codec import DecodedImage, color_plane, to_uint8
from services.models.remote import open_model_store
from services.models.vision import Answer, Description, Question, VisionEngine


@serve.deployment(name="Vision", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Vision(EngineReplica):
    """The vision models (``caption_model``, ``tag_model``, ``nsfw_model``, ``vqa_model``:
    transformers, torchvision or an imported graph); errors are returned, not raised."""

    def __init__(self, settings: Settings) -> None:
        structured_logs()
        roles = ("caption", "tags", "nsfw", "vqa")
        store = open_model_store(settings, [n for role in roles for n in settings.configured(role)])
        share = gpu_share()
        self.engine = self.vision = VisionEngine(settings, store, share)
        self.vision.load()
        self.start(settings, share)

    async def describe(
        self, image: DecodedImage, want: list[str], background: bool = False
    ) -> Description:
        with self.ongoing:
            async with self.gate.admit(background):
                return await asyncio.to_thread(self.vision.describe, _rgb(image), set(want))

    async def answer(
        self, image: DecodedImage, question: Question, background: bool = False
    ) -> AsyncIterator[str | Answer]:
        """A streaming call: the answer's text pieces as the model writes them, then
        the whole ``Answer``."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def emit(piece: str) -> None:  # on the model's thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        with self.ongoing:
            async with self.gate.admit(background):
                work = asyncio.ensure_future(asyncio.to_thread(
                    self.vision.answer, _rgb(image), question, emit))  # fmt: skip
                work.add_done_callback(lambda _: pieces.put_nowait(None))
                while (piece := await pieces.get()) is not None:
                    yield piece
                yield await work

    async def run_step(
        self, image: DecodedImage, options: dict[str, Any], background: bool = False
    ) -> dict[str, Any]:
        """A preset's caption step: its text outputs (``want``: caption, tags, nsfw)."""
        want = list(options.get("want", ["caption", "tags", "nsfw"]))
        return (await self.describe(image, want, background)).public()


def _rgb(image: DecodedImage) -> np.ndarray:
    return np.ascontiguousarray(to_uint8(color_plane(image)))
