"""What the Mesher takes and gives back: a mesh request's options, checked by
services/pipelines/mesh.py, and its output (the file, its preview, its counts). No
torch here: the API and the job layer pass these along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from services.imaging.meshes import MeshFormat

MeshEngineName = Literal["relief", "triposr"]
DEFAULT_RELIEF_DEPTH = 0.3  # a relief's height when none is asked, as a share of its width
Foreground = Literal["alpha", "segmentation", "depth", "none"]


@dataclass(frozen=True)
class MeshOptions:
    """One mesh request, checked."""

    engine: MeshEngineName
    model: str  # TripoSR's, or the depth model's name
    resolution: int  # the marching-cubes grid's edge, or the relief grid's longer side
    max_faces: int
    format: MeshFormat = "glb"
    remove_background: bool = True
    relief_depth: float = DEFAULT_RELIEF_DEPTH
    preview: bool = True  # render the PNG preview (a job stores it; a sync answer has none)

    @property
    def models(self) -> list[str]:
        return [self.model]


@dataclass(frozen=True)
class MeshOutput:
    """The mesh file, its PNG preview, and what went into it."""

    data: bytes
    content_type: str
    preview_png: bytes | None
    vertices: int
    faces: int
    foreground: Foreground
    seconds: dict[str, float]

    def stats(self) -> dict[str, Any]:
        return {"vertices": self.vertices, "faces": self.faces, "foreground": self.foreground}
