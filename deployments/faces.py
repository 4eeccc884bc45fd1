"""The FaceRestorer deployment: detection and paste-back per request, restoration
batched across the faces of concurrent requests, the background sent to the Upscaler."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.backend import ServeBackend
from deployments.logs import structured_logs
from deployments.replica import EngineReplica, gpu_share, unwrap
from services.config import Settings
from services.errors import PixserveError
from services.imaging.codec import DecodedImage
from services.imaging.faces import Face
from services.models.faces import FaceCrops, FaceEngine, FacePass
from services.models.remote import open_model_store
from services.pipelines.faces import (
    DetectOptions,
    FaceOptions,
    FaceResult,
    anonymize_faces,
    detect_faces,
    restore_faces,
)
from services.telemetry.tracing import batch_span, current_traceparent


@serve.deployment(name="FaceRestorer", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class FaceRestorer(EngineReplica):
    """GFPGAN / CodeFormer behind RetinaFace (``settings.face_models``, ``face_detectors``)."""

    def __init__(self, upscaler: DeploymentHandle[Any], settings: Settings) -> None:
        structured_logs()
        store = open_model_store(settings, settings.face_models + settings.face_detectors)
        share = gpu_share()
        self.engine = self.faces = FaceEngine(settings, store, share)
        self.faces.on_pass = lambda p: self.record_pass(p.model, p.faces, p.capacity, p.seconds)
        self.faces.load()
        # the background's upscale keeps the request's priority (a job item's waits)
        self.backgrounds = {
            priority: ServeBackend({"Upscaler": upscaler}, store.manifest, background=priority)
            for priority in (False, True)
        }
        self.batched = self.restore_batch
        self.start(settings, share)

    async def restore(
        self, image: DecodedImage, options: FaceOptions, request_id: str = "",
        background: bool = False,
    ) -> FaceResult:  # fmt: skip
        """One image's faces restored onto its background (a job item's after the sync
        requests waiting)."""
        with self.ongoing:
            async with self.gate.admit(background):
                return await restore_faces(image, options, self.faces.detect, self._restore,
                                           self.backgrounds[background], self.settings,
                                           request_id)  # fmt: skip

    async def detect(
        self, image: DecodedImage, options: DetectOptions, background: bool = False
    ) -> list[Face]:
        """Every face in the image, most confident first."""
        with self.ongoing:
            async with self.gate.admit(background):
                return await detect_faces(image, options, self.faces.detect)

    async def run_step(
        self, image: DecodedImage, options: FaceOptions | DetectOptions, background: bool = False
    ) -> DecodedImage:
        """A pipeline step: the restored image, or (blur_faces) every face anonymised."""
        if isinstance(options, DetectOptions):
            with self.ongoing:
                async with self.gate.admit(background):
                    blurred, _ = await anonymize_faces(image, options, self.faces.detect)
            return blurred
        result = await self.restore(image, options, background=background)
        return DecodedImage(result.pixels, image.bit_depth, image.source_format)

    async def _restore(self, crops: FaceCrops) -> np.ndarray:
        traced = dataclasses.replace(crops, traceparent=current_traceparent())
        return np.asarray(unwrap(await self.restore_batch(traced)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def restore_batch(self, requests: list[FaceCrops]) -> list[np.ndarray | PixserveError]:
        with batch_span("pixserve.face_batch", [r.traceparent for r in requests],
                        batch_requests=len(requests),
                        batch_faces=sum(len(r.crops) for r in requests),
                        device=str(self.faces.runtime.device), replica=self.replica):  # fmt: skip
            return await asyncio.to_thread(self.faces.restore, requests)

    def face_passes(self) -> list[FacePass]:
        return list(self.faces.passes)
