"""The Mesher deployment: one image to a mesh per call (TripoSR or depth relief). A
mesh takes long next to its upload, so replicas scale on ongoing requests and the
engine works in a thread, never on the replica's event loop."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.logs import structured_logs
from deployments.replica import EngineReplica, gpu_share
from services.config import Settings
from services.imaging.codec import DecodedImage, color_plane, to_uint8
from services.models.mesh_io import MeshOptions, MeshOutput
from services.models.mesher import ROLES, MesherEngine
from services.models.remote import open_model_store


@serve.deployment(name="Mesher", ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Mesher(EngineReplica):
    """``mesh_model`` (TripoSR), ``depth_model`` and ``segment_model`` behind one call."""

    def __init__(self, settings: Settings) -> None:
        structured_logs()
        names = [n for setting in ROLES.values() if (n := getattr(settings, setting))]
        store = open_model_store(settings, names)
        share = gpu_share()
        self.engine = self.mesher = MesherEngine(settings, store, share)
        self.mesher.load()
        self.start(settings, share)

    async def mesh(
        self, image: DecodedImage, options: MeshOptions, background: bool = False
    ) -> MeshOutput:
        """One image's mesh (a job item's after the sync requests waiting)."""
        with self.ongoing:
            async with self.gate.admit(background):
                output = await asyncio.to_thread(self.mesher.mesh, _pixels(image), options)
        model_seconds = output.seconds["foreground"] + output.seconds["reconstruct"]
        self.record_pass(options.model, 1, 1, model_seconds)  # file and preview: not the model's
        return output

    async def run_step(
        self, image: DecodedImage, options: MeshOptions, background: bool = False
    ) -> MeshOutput:
        """A preset's mesh step (its last: the mesh is the preset's output)."""
        return await self.mesh(image, options, background)


def _pixels(image: DecodedImage) -> np.ndarray:
    """RGB or RGBA uint8 (alpha kept: it is the object's mask when it has one)."""
    rgb = to_uint8(color_plane(image))
    if not image.has_alpha:
        return np.ascontiguousarray(rgb)
    return np.concatenate([rgb, to_uint8(image.pixels[:, :, -1:])], axis=2)
