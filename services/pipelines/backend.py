"""What the use cases need from the serving layer: one call per deployment method.

The Serve adapter (deployments/backend.py) implements it over handles; tests and
benchmarks implement it in-process. Errors are raised as ``PixserveError``.
"""

from __future__ import annotations

from typing import Protocol

from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertOptions
from services.imaging.faces import Face
from services.models.diffusion import Generated, GenerateOptions
from services.models.mesh_io import MeshOptions, MeshOutput
from services.models.vision import Description
from services.pipelines.faces import DetectOptions, FaceOptions, FaceResult
from services.pipelines.presets import PlanBackend
from services.pipelines.upscale import TileBackend


class TaskBackend(TileBackend, PlanBackend, Protocol):
    """Tiles, plans, faces, generation, vision, meshes and conversion, one call each."""

    async def restore_faces(self, image: DecodedImage, options: FaceOptions) -> FaceResult:
        """One image's faces restored by the FaceRestorer."""
        ...

    async def detect_faces(self, image: DecodedImage, options: DetectOptions) -> list[Face]:
        """Every face the FaceRestorer's detector finds, most confident first."""
        ...

    async def generate(self, options: GenerateOptions, image: DecodedImage | None) -> Generated:
        """One SDXL image from the Diffusion deployment (image-to-image when ``image``)."""
        ...

    async def describe(self, image: DecodedImage, want: list[str]) -> Description:
        """Caption, tags and/or NSFW score from the Vision deployment."""
        ...

    async def mesh(self, image: DecodedImage, options: MeshOptions) -> MeshOutput:
        """One image's mesh from the Mesher deployment."""
        ...

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        """One image converted by the Codec deployment."""
        ...
