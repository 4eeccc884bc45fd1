"""``POST /v1/mesh``: one image to a 3D mesh (GLB, zipped OBJ, or PLY) by the Mesher,
with depth relief (fast) or TripoSR (a whole object)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_ERRORS, Responses
from services.imaging.meshes import MESH_EXTENSIONS, MESH_TYPES
from services.models.mesh_io import DEFAULT_RELIEF_DEPTH, MeshEngineName

router = APIRouter(tags=["mesh"])
MESH_CONTENT: Responses = {
    200: {"content": {kind: {} for kind in sorted(set(MESH_TYPES.values()))}}
}


@router.post("/v1/mesh", response_class=Response, responses=MESH_CONTENT | IMAGE_ERRORS)
async def create_mesh(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[
        UploadFile,
        File(description="The image: PNG (alpha: the object's mask), JPEG, WEBP, BMP, TIFF."),
    ],
    engine: Annotated[
        MeshEngineName, Form(description="relief (depth, fast) or triposr (a whole object).")
    ] = "relief",
    model: Annotated[
        str | None, Form(description="The engine's model (default: its setting).")
    ] = None,
    resolution: Annotated[
        int | None,
        Form(
            description="Marching-cubes grid (triposr) or relief grid's longer side; "
            "default 256, at most the server's mesh_max_resolution."
        ),
    ] = None,
    max_faces: Annotated[
        int | None, Form(description="Face budget (decimated past it); default mesh_max_faces.")
    ] = None,
    mesh_format: Annotated[
        Literal["glb", "obj", "ply"],
        Form(alias="format", description="glb, obj (a zip with MTL and PNG) or ply."),
    ] = "glb",
    remove_background: Annotated[
        bool, Form(description="Cut the object out first (alpha, segmentation or depth).")
    ] = True,
    relief_depth: Annotated[
        float, Form(description="relief: nearest point's height as a share of the width.")
    ] = DEFAULT_RELIEF_DEPTH,
) -> Response:
    """The image's mesh: Y-up, metres, 1 m on its longest side; its vertex and face
    counts and where the object's outline came from in ``X-Pixserve-Mesh-*`` and
    ``X-Pixserve-Foreground`` headers."""
    fields = {"task": "mesh", "engine": engine, "model": model, "resolution": resolution,
              "max_faces": max_faces, "format": mesh_format,
              "remove_background": remove_background, "relief_depth": relief_depth,
              "preview": False}  # fmt: skip  # a sync answer is the mesh alone
    response = task_response(await runner.run(fields, await read_upload(image, settings)))
    name = f"mesh.{MESH_EXTENSIONS[mesh_format]}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
