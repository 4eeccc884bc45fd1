"""The tile-model deployments: the Upscaler and the Denoiser, each the tile engine
behind ``@serve.batch`` over whole images (tiled, batched and stitched on the
replica's device), with its own models, replicas and GPU share."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from redis.exceptions import RedisError

from deployments.logs import structured_logs
from deployments.replica import EngineReplica, gpu_share, unwrap
from services.config import Settings
from services.errors import PixserveError
from services.imaging.codec import DecodedImage
from services.models.catalog import adopt_into_store
from services.models.remote import open_model_store
from services.models.tile_io import TileJob, TileOutput
from services.models.upscaler import ForwardPass, UpscaleEngine
from services.pipelines.presets import TileStep
from services.pipelines.upscale import upscale
from services.redis_client import connect_redis_sync
from services.storage.factory import open_store
from services.telemetry.tracing import annotate, batch_span

logger = logging.getLogger(__name__)


class TileModels(EngineReplica):
    """Loads its models once; batches concurrent requests' tiles together."""

    tasks: tuple[str, ...] = ("upscale",)  # the model tasks it serves (added models too)

    def __init__(self, settings: Settings, models: list[str]) -> None:
        structured_logs()
        store = open_model_store(settings, models)
        try:  # the models an operator added at run time, beside the configured ones
            adopt_into_store(connect_redis_sync(settings), open_store(settings), store, models,
                             self.tasks)  # fmt: skip
        except (RedisError, PixserveError, OSError) as exc:  # the replica still starts
            logger.warning("added models not adopted: %s", exc)
        share = gpu_share()
        self.engine = self.tiles = UpscaleEngine(settings, store, models, gpu_share=share)
        self.tiles.on_pass = lambda p: self.record_pass(p.model, p.tiles, p.capacity, p.seconds)
        self.tiles.load()
        self.batched = self.upscale_batch
        self.start(settings, share)
        self.tiles.on_progress = lambda job, done, total, preview: self.progress.report(
            job.progress_key, done, total, "tiles", preview)  # fmt: skip

    def adopt_added(self) -> list[str]:
        """The models added at run time for its tasks, fetched, checked and loaded."""
        fresh = adopt_into_store(self.control.client, open_store(self.settings),
                                 self.tiles.store, self.tiles.model_names, self.tasks)  # fmt: skip
        for name in fresh:
            self.tiles.load_model(name)
        return fresh

    async def _adopt_unknown(self, model: str) -> None:
        """A model this replica does not list may have been added since it started, by
        a command it missed (another app's replica, a dropped subscription): adopt the
        added models before the request runs; if it is not among them, the engine says
        it is not configured, as before."""
        if model in self.tiles.model_names:
            return
        try:
            await asyncio.to_thread(self.adopt_added)
        except (RedisError, PixserveError, OSError) as exc:
            logger.warning("added models not adopted for %s: %s", model, exc)

    async def upscale(self, job: TileJob, background: bool = False) -> TileOutput:
        """One request's image, its tiles batched with other requests' (counted while
        ongoing; a job item's after the sync requests waiting); its error, a value
        inside the batch, is raised here."""
        await self._adopt_unknown(job.model)
        with self.ongoing:
            async with self.gate.admit(background):
                try:
                    return unwrap(await self.upscale_batch(job))
                except asyncio.CancelledError:  # its tiles stop at the next chunk
                    self.tiles.cancel(job.request_id)
                    raise

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def upscale_batch(self, jobs: list[TileJob]) -> list[TileOutput | PixserveError]:
        with batch_span("pixserve.batch", [job.traceparent for job in jobs],
                        batch_requests=len(jobs),
                        batch_pixels=sum(int(job.pixels.size) for job in jobs),
                        device=str(self.tiles.device), replica=self.replica):  # fmt: skip
            results = await asyncio.to_thread(self.tiles.predict, jobs)
            annotate(batch_tiles=sum(r.tiles for r in results if isinstance(r, TileOutput)))
            return results

    async def run_step(
        self, image: DecodedImage, step: TileStep, background: bool = False
    ) -> DecodedImage:
        """A pipeline step: a whole image, tiled here; its tiles join the same batches
        as other requests'."""
        await self._adopt_unknown(step.options.model)
        with self.ongoing:
            async with self.gate.admit(background):
                result = await upscale(image, step.options, step.native_scale, self,
                                       self.settings)  # fmt: skip
        assert result.pixels is not None  # no JPEG was asked for
        return DecodedImage(result.pixels, image.bit_depth, image.source_format)

    async def upscale_image(self, job: TileJob) -> TileOutput:
        """The tile backend of ``run_step``: this replica's own batch."""
        return unwrap(await self.upscale_batch(job))

    def forward_passes(self) -> list[ForwardPass]:
        return list(self.tiles.passes)


@serve.deployment(name="Upscaler", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Upscaler(TileModels):
    """Real-ESRGAN models (``settings.models``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.models)


@serve.deployment(name="Denoiser", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Denoiser(TileModels):
    """Denoising models, SCUNet and DnCNN (``settings.denoise_models``)."""

    tasks = ("denoise",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.denoise_models)


@serve.deployment(name="TileFallback", ray_actor_options={"num_cpus": 2, "num_gpus": 0})
class TileFallback(TileModels):
    """Every tile model (upscale and denoise) on CPU, bound when ``cpu_fallback`` is on:
    a request its GPU deployment had no memory for, even one tile a pass, runs here
    once more (slower, but answered)."""

    tasks = ("upscale", "denoise")

    def __init__(self, settings: Settings) -> None:
        on_cpu = {"device": "cpu", "precision": "fp32", "compile": False,
                  "gpu_memory_fraction": None}  # fmt: skip
        cpu = settings.model_copy(update=on_cpu)
        super().__init__(cpu, list(dict.fromkeys(settings.models + settings.denoise_models)))
