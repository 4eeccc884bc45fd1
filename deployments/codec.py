"""The Codec deployment: format conversion on CPU, its own replicas and autoscaling."""

from __future__ import annotations

import asyncio

from ray import serve

from services.config import Settings
from services.errors import PixserveError
from services.imaging.convert import Converted, ConvertOptions, convert_image
from services.pipelines.upscale import image_limits


@serve.deployment(name="Codec", ray_actor_options={"num_cpus": 1})
class Codec:
    """Converts one image per call; a bad input comes back as the error, not raised."""

    def __init__(self, settings: Settings) -> None:
        self.limits = image_limits(settings)

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted | PixserveError:
        try:
            return await asyncio.to_thread(convert_image, data, options, self.limits)
        except PixserveError as exc:
            return exc
