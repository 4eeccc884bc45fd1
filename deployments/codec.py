"""The Codec deployment: format conversion on CPU, its own replicas and autoscaling."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.metrics import start_live
from services.config import Settings
from services.errors import PixserveError
from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertOptions, convert_image, encode_pixels
from services.pipelines.upscale import image_limits
from services.telemetry.live import Ongoing


@serve.deployment(name="Codec", ray_actor_options={"num_cpus": 1})
class Codec:
    """Converts one image per call; a bad input comes back as the error, not raised."""

    def __init__(self, settings: Settings) -> None:
        self.limits = image_limits(settings)
        self.ongoing = Ongoing()
        start_live(settings, lambda: {"ongoing": self.ongoing.value, "device": "cpu"})

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted | PixserveError:
        with self.ongoing:
            try:
                return await asyncio.to_thread(convert_image, data, options, self.limits)
            except PixserveError as exc:
                return exc

    async def encode(
        self, image: DecodedImage | PixserveError, options: ConvertOptions
    ) -> Converted | PixserveError:
        """A pipeline's last step: the image encoded (or the upstream step's error)."""
        if isinstance(image, PixserveError):
            return image
        with self.ongoing:
            try:
                return await asyncio.to_thread(encode_pixels, image, options, self.limits)
            except PixserveError as exc:
                return exc
