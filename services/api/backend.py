"""What the API needs from the serving layer, as a protocol the Ray adapter implements."""

from __future__ import annotations

from typing import Protocol

from services.api.schemas import DeploymentReadiness, DeploymentView
from services.imaging.codec import DecodedImage
from services.pipelines.backend import TaskBackend


class PlatformBackend(TaskBackend, Protocol):
    """The use cases' backend, plus vision questions and the state of the deployments."""

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        """Per deployment: reachable, device, loaded and missing models."""
        ...

    async def deployments(self) -> tuple[str, list[DeploymentView]]:
        """This application's name and deployments: status, running and target replicas."""
        ...

    async def answer(
        self, image: DecodedImage, question: str, max_tokens: int
    ) -> tuple[str, int, int]:
        """A visual question's answer and the prompt's and answer's token counts."""
        ...
