"""Meshes from pixels: an isosurface of a density grid, a watertight relief of a depth
map, decimation to a face budget, GLB/OBJ/PLY files and a shaded preview render.

Every mesh leaves here Y-up, in metres, centred on the origin with its largest side
``MESH_SIZE_M`` long, so viewers and game engines place it at a sane scale.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

MeshFormat = Literal["glb", "obj", "ply"]
MESH_TYPES: dict[str, str] = {
    "glb": "model/gltf-binary", "obj": "application/zip", "ply": "model/x-ply",
}  # fmt: skip
MESH_EXTENSIONS: dict[str, str] = {"glb": "glb", "obj": "zip", "ply": "ply"}  # file names
MESH_SIZE_M = 1.0
PREVIEW_SAMPLES = 4_000_000  # surface points a preview draws, at most
_LIGHT = np.array([0.4, 0.7, 0.6]) / np.linalg.norm([0.4, 0.7, 0.6])


@dataclass
class Mesh:
    """Triangles with vertex colours (RGB uint8) or a UV-mapped texture."""

    vertices: np.ndarray  # [N, 3] float32
    faces: np.ndarray  # [M, 3] int64, counter-clockwise seen from outside
    colors: np.ndarray | None = None  # [N, 3] uint8
    uvs: np.ndarray | None = None  # [N, 2] float32, origin bottom-left
    texture: np.ndarray | None = None  # [H, W, 3] uint8

    @property
    def face_count(self) -> int:
        return len(self.faces)


def isosurface(volume: np.ndarray, level: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface where ``volume`` (a cube sampled on [-radius, radius]^3, indexed x, y,
    z) crosses ``level``, with faces turned outwards (the inside is above ``level``)."""
    from skimage import measure

    if not volume.min() < level < volume.max():
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    skimage: Any = measure  # untyped
    vertices, faces, _, _ = skimage.marching_cubes(volume, level, allow_degenerate=False)
    vertices = vertices / (volume.shape[0] - 1) * 2 * radius - radius
    faces = faces.astype(np.int64)
    if _signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1].copy()
    return vertices.astype(np.float32), faces


def relief(depth: np.ndarray, mask: np.ndarray | None, height: float) -> Mesh:
    """A closed height field over the cells where ``mask`` holds (all when None):
    ``depth`` (0 far .. 1 near) raises the top by up to ``height`` times the width; a
    flat base and walls along the region's border close it. The top's UVs map the
    photo; the base and walls take its edge colours through the same UVs."""
    rows, cols = depth.shape
    keep = np.ones((rows - 1, cols - 1), bool) if mask is None else _cells(mask)
    top = _grid_faces(rows, cols, keep)
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    scale = 1.0 / max(rows - 1, cols - 1)
    base_z = -0.02 * (cols - 1) * scale  # a thin plinth under the lowest point
    # Y-up: x right, y up the photo, z (the height) out of it towards the viewer
    surface = np.stack([xs * scale, -ys * scale, depth * height], -1).reshape(-1, 3)
    bottom = surface.copy()
    bottom[:, 2] = base_z
    uv = np.stack([xs / (cols - 1), 1 - ys / (rows - 1)], -1).reshape(-1, 2)
    count = rows * cols
    walls = _walls(top, count)
    faces = np.concatenate([top, top[:, ::-1] + count, walls])
    vertices = np.concatenate([surface, bottom]).astype(np.float32)
    mesh = Mesh(vertices, faces, uvs=np.concatenate([uv, uv]).astype(np.float32))
    return _compact(mesh)


def decimate(mesh: Mesh, max_faces: int) -> Mesh:
    """At most ``max_faces`` faces (quadric edge collapse); vertex colours and texture
    coordinates follow each kept vertex's nearest original one."""
    if mesh.face_count <= max_faces:
        return mesh
    import fast_simplification
    from scipy.spatial import cKDTree

    points, faces = fast_simplification.simplify(
        mesh.vertices.astype(np.float64), mesh.faces, target_count=max_faces
    )
    _, nearest = cKDTree(mesh.vertices).query(points)
    colors = None if mesh.colors is None else mesh.colors[nearest]
    uvs = None if mesh.uvs is None else mesh.uvs[nearest]
    return Mesh(points.astype(np.float32), faces.astype(np.int64), colors, uvs, mesh.texture)


def normalized(mesh: Mesh) -> Mesh:
    """Centred on the origin, the largest side ``MESH_SIZE_M`` long."""
    if not len(mesh.vertices):
        return mesh
    low, high = mesh.vertices.min(0), mesh.vertices.max(0)
    size = float((high - low).max()) or 1.0
    vertices = (mesh.vertices - (low + high) / 2) * (MESH_SIZE_M / size)
    return Mesh(vertices.astype(np.float32), mesh.faces, mesh.colors, mesh.uvs, mesh.texture)


def export(mesh: Mesh, fmt: MeshFormat) -> bytes:
    """GLB (textured or vertex-coloured), OBJ with its MTL and PNG zipped, or binary PLY
    with vertex colours (a textured mesh's colours sampled from the texture)."""
    if fmt == "obj":
        return _obj_zip(mesh)
    shape = _trimesh(mesh, textured=fmt == "glb")
    if fmt == "glb":
        return bytes(shape.export(file_type="glb"))
    return bytes(shape.export(file_type="ply", encoding="binary"))


def preview(mesh: Mesh, size: int = 512, device: str = "cpu") -> bytes:
    """A PNG of the mesh seen from the front-left and above, Lambert-shaded on a light
    background: each face sampled about once a pixel and the nearest sample kept per
    pixel (a z-buffer in torch, on ``device``: the Mesher's own; no GL)."""
    import torch

    canvas = torch.tensor([236, 238, 242], dtype=torch.uint8).repeat(size * size, 1)
    if mesh.face_count:
        with torch.inference_mode():
            pixels, depth, rgb = _samples(mesh, size, torch.device(device))
            nearest = torch.full((size * size,), -torch.inf, device=depth.device)
            nearest.scatter_reduce_(0, pixels, depth, reduce="amax")
            front = depth >= nearest[pixels]
            canvas = canvas.to(depth.device)
            canvas[pixels[front]] = rgb[front]
    out = io.BytesIO()
    Image.fromarray(canvas.reshape(size, size, 3).cpu().numpy()).save(out, format="PNG")
    return out.getvalue()


def vertex_colors(mesh: Mesh) -> np.ndarray:
    """Each vertex's RGB: its own, sampled from the texture at its UV, else grey."""
    if mesh.colors is not None:
        return mesh.colors
    if mesh.texture is not None and mesh.uvs is not None:
        height, width = mesh.texture.shape[:2]
        x = np.clip((mesh.uvs[:, 0] * (width - 1)).round().astype(int), 0, width - 1)
        y = np.clip(((1 - mesh.uvs[:, 1]) * (height - 1)).round().astype(int), 0, height - 1)
        sampled: np.ndarray = mesh.texture[y, x, :3]
        return sampled
    return np.full((len(mesh.vertices), 3), 180, np.uint8)


def _samples(mesh: Mesh, size: int, device: Any) -> tuple[Any, Any, Any]:
    """Points on the faces turned towards the camera: flat pixel index, depth (larger is
    nearer) and shaded colour, a face's points at most a pixel apart."""
    import torch

    points, shade = _view(torch.from_numpy(mesh.vertices).to(device),
                          torch.from_numpy(mesh.faces).to(device))  # fmt: skip
    span = float((points[:, :2].amax(0) - points[:, :2].amin(0)).max()) or 1.0
    centre = (points[:, :2].amin(0) + points[:, :2].amax(0)) / 2
    screen = (points[:, :2] - centre) / span * torch.tensor([1.0, -1.0], device=device)
    screen = screen * size * 0.85 + size / 2
    facing = shade > 0
    faces = torch.from_numpy(mesh.faces).to(device)[facing]
    colors = torch.from_numpy(vertex_colors(mesh)).to(device).float()
    rgb = (colors[faces].mean(1) * shade[facing, None]).clamp(0, 255).to(torch.uint8)
    corners, depths = screen[faces], points[faces, 2]  # [F, 3, 2], [F, 3]
    longest = (corners - corners[:, [1, 2, 0]]).abs().amax(dim=(1, 2))
    steps = longest.ceil().clamp(1, 64).long()
    while int((steps * (steps + 1) // 2).sum()) > PREVIEW_SAMPLES and int(steps.max()) > 1:
        steps = (steps // 2).clamp(min=1)
    order = torch.argsort(steps)  # faces of one sampling density together
    values, counts = torch.unique_consecutive(steps[order], return_counts=True)
    groups = zip(values.tolist(), corners[order].split(counts.tolist()),
                 depths[order].split(counts.tolist()), rgb[order].split(counts.tolist()),
                 strict=True)  # fmt: skip
    parts = [_on_faces(c, d, r, n) for n, c, d, r in groups]
    xy, depth, shaded = (torch.cat(column) for column in zip(*parts, strict=True))
    inside = ((xy >= 0) & (xy < size)).all(1)
    x, y = xy[inside].long().unbind(1)
    return y * size + x, depth[inside], shaded[inside]


def _on_faces(corners: Any, depths: Any, rgb: Any, n: int) -> tuple[Any, Any, Any]:
    """``n (n + 1) / 2`` barycentric points on each face: screen xy, depth, colour."""
    import torch

    i, j = _lattice(n)
    u, v = (i + 1 / 3) / n, (j + 1 / 3) / n
    weights = torch.stack([1 - u - v, u, v], 1).to(corners)  # [S, 3]
    xy = (weights @ corners).reshape(-1, 2)  # [F, S, 2]
    depth = (depths @ weights.T).reshape(-1)
    return xy, depth, rgb.repeat_interleave(len(u), dim=0)


def _lattice(n: int) -> tuple[Any, Any]:
    """The (i, j) with i + j < n."""
    import torch

    grid = torch.arange(n)
    i, j = torch.meshgrid(grid, grid, indexing="ij")
    keep = (i + j) < n
    return i[keep].float(), j[keep].float()


def _view(vertices: Any, faces: Any) -> tuple[Any, Any]:
    """The vertices turned to the preview's camera (from the front-left and above,
    looking down -z) and each face's Lambert shade (0 for faces turned away)."""
    import torch

    yaw, pitch = np.radians(-35.0), np.radians(-25.0)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)],
                     [0, np.sin(pitch), np.cos(pitch)]])  # fmt: skip
    rotation = torch.from_numpy((tilt @ turn).T).to(vertices)
    points = vertices @ rotation
    triangles = points[faces]
    normals = torch.linalg.cross(
        triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    )
    normals = normals / (normals.norm(dim=1, keepdim=True) + 1e-12)
    light = torch.from_numpy(_LIGHT).to(vertices)
    shade = torch.where(normals[:, 2] > 0, 0.35 + 0.65 * (normals @ light).clamp(0, 1), 0.0)
    return points, shade


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def _cells(mask: np.ndarray) -> np.ndarray:
    """Grid cells whose four corners are all inside the mask."""
    cells: np.ndarray = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    return cells


def _grid_faces(rows: int, cols: int, keep: np.ndarray) -> np.ndarray:
    """Two triangles per kept cell, counter-clockwise seen from above (+z)."""
    r, c = np.nonzero(keep)
    a = r * cols + c
    b, d, e = a + 1, a + cols, a + cols + 1  # right, below, below-right
    # x grows with c, y falls with r: (a, d, b) and (b, d, e) turn counter-clockwise
    return np.concatenate([np.stack([a, d, b], 1), np.stack([b, d, e], 1)]).astype(np.int64)


def _walls(top: np.ndarray, offset: int) -> np.ndarray:
    """Two triangles down from every border edge of the top surface to the base."""
    edges = np.concatenate([top[:, [0, 1]], top[:, [1, 2]], top[:, [2, 0]]])
    key = edges.min(1) * offset + edges.max(1)  # one integer per undirected edge
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    border = edges[counts[inverse] == 1]  # used once: on the outline
    a, b = border[:, 0], border[:, 1]
    down = np.stack([b, a, a + offset], 1)
    return np.concatenate([down, np.stack([b, a + offset, b + offset], 1)])


def _compact(mesh: Mesh) -> Mesh:
    """Only the vertices some face uses."""
    used = np.unique(mesh.faces)
    index = np.full(len(mesh.vertices), -1, np.int64)
    index[used] = np.arange(len(used))
    colors = None if mesh.colors is None else mesh.colors[used]
    uvs = None if mesh.uvs is None else mesh.uvs[used]
    return Mesh(mesh.vertices[used], index[mesh.faces], colors, uvs, mesh.texture)


def _trimesh(mesh: Mesh, textured: bool) -> Any:
    """The mesh as a trimesh (untyped), textured or with vertex colours."""
    import trimesh

    library: Any = trimesh  # untyped
    visuals = library.visual
    if textured and mesh.texture is not None and mesh.uvs is not None:
        material = visuals.material.PBRMaterial(baseColorTexture=Image.fromarray(mesh.texture),
                               metallicFactor=0.0, roughnessFactor=1.0)  # fmt: skip
        visual = visuals.TextureVisuals(uv=mesh.uvs, material=material)
    else:
        rgba = np.concatenate([vertex_colors(mesh), np.full((len(mesh.vertices), 1), 255,
                                                             np.uint8)], 1)  # fmt: skip
        visual = visuals.ColorVisuals(vertex_colors=rgba)
    return library.Trimesh(mesh.vertices, mesh.faces, visual=visual, process=False)


def _obj_zip(mesh: Mesh) -> bytes:
    """``mesh.obj``, ``mesh.mtl`` and ``texture.png`` (a texture made of the vertex
    colours' strip when the mesh has none)."""
    import trimesh

    library: Any = trimesh  # untyped
    shape = _trimesh(mesh, textured=True)
    files = library.exchange.obj.export_obj(shape, include_texture=True, return_texture=True,
                                            mtl_name="mesh.mtl")  # fmt: skip
    text, assets = files if isinstance(files, tuple) else (files, {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mesh.obj", text)
        for name, data in assets.items():
            archive.writestr(name, data)
    return out.getvalue()
