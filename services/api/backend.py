"""What the API needs from the serving layer, as a protocol the Ray adapter implements."""

from __future__ import annotations

from typing import Protocol

from services.api.schemas import DeploymentReadiness, DeploymentView
from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertOptions
from services.models.diffusion import Generated, GenerateOptions
from services.models.vision import Description
from services.pipelines.faces import FaceOptions, FaceResult
from services.pipelines.presets import PlanBackend
from services.pipelines.upscale import TileBackend


class PlatformBackend(TileBackend, PlanBackend, Protocol):
    """Tile inference, preset plans, and the state of the model deployments behind them."""

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        """Per deployment: reachable, device, loaded and missing models."""
        ...

    async def deployments(self) -> tuple[str, list[DeploymentView]]:
        """This application's name and deployments: status, running and target replicas."""
        ...

    async def restore_faces(self, image: DecodedImage, options: FaceOptions) -> FaceResult:
        """One image's faces restored by the FaceRestorer (errors raised as PixserveError)."""
        ...

    async def generate(self, options: GenerateOptions, image: DecodedImage | None) -> Generated:
        """One SDXL image from the Diffusion deployment (image-to-image when ``image``)."""
        ...

    async def describe(self, image: DecodedImage, want: list[str]) -> Description:
        """Caption, tags and/or NSFW score from the Vision deployment."""
        ...

    async def answer(
        self, image: DecodedImage, question: str, max_tokens: int
    ) -> tuple[str, int, int]:
        """A visual question's answer and the prompt's and answer's token counts."""
        ...

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        """One image converted by the Codec deployment (errors raised as PixserveError)."""
        ...
