"""The Diffusion deployment: SDXL checkpoints multiplexed by alias (realism, anime...),
one generation at a time per replica (a GPU runs one diffusion loop at full speed)."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.logs import structured_logs
from deployments.replica import EngineReplica, gpu_share
from services.config import Settings
from services.imaging.codec import DecodedImage, color_plane, to_float
from services.models.diffusion import Checkpoint, DiffusionEngine, Generated, GenerateOptions
from services.models.remote import open_model_store
from services.models.runtime import run_until_cancelled

MAX_CHECKPOINTS = 3  # loaded per replica at once; Serve evicts the least recently used


@serve.deployment(name="Diffusion", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Diffusion(EngineReplica):
    """Text-to-image and image-to-image; requests carry their checkpoint as Serve's
    multiplexed model id, so they reach a replica that has it loaded when one does."""

    def __init__(self, settings: Settings) -> None:
        structured_logs()
        store = open_model_store(settings, settings.configured("generate")
                                 + settings.configured("safety"))  # fmt: skip
        share = gpu_share()
        self.engine = self.diffusion = DiffusionEngine(settings, store, share)
        self.diffusion.load()
        self.busy = asyncio.Semaphore(1)
        self.start(settings, share)
        self.diffusion.on_step = lambda options, done, steps, preview: self.progress.report(
            options.progress_key, done, steps, "steps", preview)  # fmt: skip

    @serve.multiplexed(max_num_models_per_replica=MAX_CHECKPOINTS)  # type: ignore[untyped-decorator]
    async def checkpoint(self, alias: str) -> Checkpoint:
        return await asyncio.to_thread(self.diffusion.load_checkpoint, alias)

    async def generate(
        self, options: GenerateOptions, image: DecodedImage | None = None,
        background: bool = False,
    ) -> Generated:  # fmt: skip
        """One image; ``image`` makes it image-to-image (a job item's after the sync
        requests waiting)."""
        with self.ongoing:
            checkpoint = await self.checkpoint(options.checkpoint)
            start = None if image is None else to_float(color_plane(image))
            async with self.gate.admit(background), self.busy:
                result = await run_until_cancelled(  # a cancelled request stops the loop
                    lambda stop: self.diffusion.generate(checkpoint, options, start, stop)
                )
        self.record_pass(checkpoint.model, 1, 1, result.seconds)
        return result

    async def run_step(
        self, image: DecodedImage, options: GenerateOptions, background: bool = False
    ) -> DecodedImage:
        """A pipeline step: image-to-image on the previous step's image."""
        result = await self.generate(options, image, background)
        return DecodedImage(result.pixels, 8, image.source_format)
