"""Mesh geometry and files: reliefs are closed and face outwards, isosurfaces face
outwards, decimation keeps the budget, and every format loads back with its colours
or texture (trimesh reads what ``export`` writes)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import trimesh

from services.imaging.meshes import (
    MESH_SIZE_M,
    Mesh,
    decimate,
    export,
    isosurface,
    normalized,
    preview,
    relief,
)


def _sphere_field(size: int = 40) -> np.ndarray:
    axis = np.linspace(-1, 1, size)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return 50 - 50 * np.sqrt(x**2 + y**2 + z**2)  # 25 at radius 0.5


def _textured(mask: np.ndarray | None = None) -> Mesh:
    rng = np.random.default_rng(0)
    mesh = relief(rng.random((30, 40)).astype(np.float32), mask, 0.3)
    mesh.texture = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    return normalized(mesh)


def _shape(mesh: Mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


@pytest.mark.parametrize("cut", [False, True])
def test_a_relief_is_closed_and_faces_out(cut: bool) -> None:
    mask = None
    if cut:  # two blobs joined by a strip, with a notch: borders in every direction
        mask = np.zeros((30, 40), bool)
        mask[5:25, 5:18], mask[8:20, 25:38], mask[12:15, 10:30] = True, True, True
        mask[10:12, 8:12] = False
    shape = _shape(_textured(mask))
    assert shape.is_watertight and shape.is_winding_consistent
    assert shape.volume > 0  # outward normals: a positive signed volume


def test_a_relief_is_y_up_metres_with_its_texture_mapped() -> None:
    mesh = _textured()
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert extent.max() == pytest.approx(MESH_SIZE_M)
    assert extent[0] > extent[1] > extent[2]  # 40 wide, 30 high, a 0.3 relief deep
    assert mesh.uvs is not None and mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1


def test_an_isosurface_faces_out_at_the_level() -> None:
    vertices, faces = isosurface(_sphere_field(), 25.0, 1.0)
    radii = np.linalg.norm(vertices, axis=1)
    assert radii == pytest.approx(np.full_like(radii, 0.5), abs=0.03)
    shape = trimesh.Trimesh(vertices, faces, process=False)
    assert shape.is_watertight and shape.volume > 0


def test_an_isosurface_the_field_never_crosses_is_empty() -> None:
    vertices, faces = isosurface(np.full((8, 8, 8), 3.0), 25.0, 1.0)
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)


def test_decimation_keeps_the_budget_and_the_colours() -> None:
    vertices, faces = isosurface(_sphere_field(64), 25.0, 1.0)
    colors = np.tile(np.array([[200, 30, 30]], np.uint8), (len(vertices), 1))
    small = decimate(Mesh(vertices, faces, colors), 500)
    assert small.face_count <= 500 < len(faces)
    assert small.colors is not None and (small.colors == [200, 30, 30]).all()
    assert _shape(small).is_watertight


def test_a_decimated_relief_keeps_its_texture() -> None:
    mesh = decimate(_textured(), 400)
    assert mesh.face_count <= 400 and mesh.texture is not None and mesh.uvs is not None
    scene = trimesh.load(io.BytesIO(export(mesh, "glb")), file_type="glb")
    assert next(iter(scene.geometry.values())).visual.kind == "texture"


def test_glb_holds_the_texture_or_the_vertex_colours() -> None:
    textured = trimesh.load(io.BytesIO(export(_textured(), "glb")), file_type="glb")
    geometry = next(iter(textured.geometry.values()))
    assert geometry.visual.material.baseColorTexture.size == (40, 30)
    vertices, faces = isosurface(_sphere_field(), 25.0, 1.0)
    colors = np.tile(np.array([[10, 200, 90]], np.uint8), (len(vertices), 1))
    colored = trimesh.load(io.BytesIO(export(Mesh(vertices, faces, colors), "glb")),
                           file_type="glb")  # fmt: skip
    geometry = next(iter(colored.geometry.values()))
    assert (geometry.visual.vertex_colors[:, :3] == [10, 200, 90]).all()


def test_obj_comes_zipped_with_its_material_and_texture() -> None:
    archive = zipfile.ZipFile(io.BytesIO(export(_textured(), "obj")))
    names = set(archive.namelist())
    assert {"mesh.obj", "mesh.mtl"} <= names and any(n.endswith(".png") for n in names)
    assert "mtllib mesh.mtl" in archive.read("mesh.obj").decode()


def test_ply_carries_vertex_colours_sampled_from_the_texture() -> None:
    mesh = _textured()
    shape = trimesh.load(io.BytesIO(export(mesh, "ply")), file_type="ply")
    assert len(shape.vertices) == len(mesh.vertices)
    assert shape.visual.vertex_colors[:, :3].std() > 10  # the texture's noise, not grey


def test_the_preview_draws_the_mesh() -> None:
    from PIL import Image

    picture = np.asarray(Image.open(io.BytesIO(preview(_textured(), 128))))
    background = picture[0, 0]
    drawn = (np.abs(picture.astype(int) - background).sum(2) > 30).mean()
    assert picture.shape == (128, 128, 3) and 0.2 < drawn < 0.9
