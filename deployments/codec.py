"""The Codec deployment: format conversion on CPU, its own replicas and autoscaling."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.logs import structured_logs
from deployments.metrics import start_live
from services.config import Settings
from services.imaging.codec import DecodedImage, image_limits
from services.imaging.convert import Converted, ConvertOptions, convert_image, encode_pixels
from services.telemetry.live import Ongoing


@serve.deployment(name="Codec", ray_actor_options={"num_cpus": 1})
class Codec:
    """Converts one image per call; a bad input raises its ``PixserveError``."""

    def __init__(self, settings: Settings) -> None:
        structured_logs()
        self.limits = image_limits(settings)
        self.ongoing = Ongoing()
        start_live(settings, lambda: {"ongoing": self.ongoing.value, "device": "cpu"})

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        with self.ongoing:
            return await asyncio.to_thread(convert_image, data, options, self.limits)

    async def encode(self, image: DecodedImage, options: ConvertOptions) -> Converted:
        """A pipeline's last step: the image encoded (an upstream step's error reaches
        the caller without this running)."""
        with self.ongoing:
            return await asyncio.to_thread(encode_pixels, image, options, self.limits)
