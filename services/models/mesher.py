"""The image-to-3D engine: one photo to a textured mesh, by TripoSR or by depth relief.

- ``triposr``: the object is cut from its background, centred and padded as TripoSR's
  own pre-processing does, reconstructed as a triplane, whose density is sampled on a
  ``resolution``^3 grid for marching cubes; each vertex gets the field's colour.
- ``relief`` (the fast default): a monocular depth model (transformers: Depth Anything
  V2, DPT) gives relative depth; a closed height field over the foreground (or the
  whole photo) carries the photo as its UV-mapped texture.

The foreground comes from the upload's alpha channel when it has one, else from the
segmentation model (``segment_model``), else from the depth map's near region; which
one was used is reported. Meshes are decimated to the face budget, then written as
GLB, OBJ (zipped with its material and texture) or PLY, with a PNG preview.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as nnf

from services.config import MODEL_SETTINGS
from services.errors import (
    EngineOutOfMemory,
    InvalidParameter,
)
from services.imaging.meshes import (
    MESH_TYPES,
    Mesh,
    decimate,
    export,
    isosurface,
    normalized,
    preview,
    relief,
)
from services.models.mesh_io import Foreground, MeshOptions, MeshOutput
from services.models.roles import RoleEngine
from services.models.triposr import TripoSR

logger = logging.getLogger(__name__)
ROLES = {role: MODEL_SETTINGS[role] for role in ("mesh", "depth", "segment")}
TRIPOSR_THRESHOLD = 25.0  # the density TripoSR's surface sits at
FOREGROUND_RATIO = 0.85  # the object's share of TripoSR's input square
# grid points per decoder pass: a large chunk fills a GPU (halved on a CUDA OOM); on a
# CPU one that stays in cache is 3x faster (8192: 1.39 s per 2^20 points against 4.19 s
# at 2^18, TripoSR's decoder on 2 cores)
CUDA_QUERY_CHUNK, CPU_QUERY_CHUNK = 1 << 18, 1 << 13
MIN_QUERY_CHUNK = 1 << 12
TEXTURE_SIDE = 2048  # a relief's texture, longest side at most
WORK_SIDE = 1024  # outlines and depth maps, longest side at most
# ADE20K's surroundings (and a binary model's "background"): not the object
BACKGROUND_LABELS = frozenset({
    "background", "wall", "floor", "ceiling", "sky", "road", "grass", "ground", "earth",
    "field", "sand", "sea", "water", "river", "mountain", "hill", "sidewalk", "path",
    "rug", "carpet", "building", "house", "tree", "plant", "fence", "curtain", "windowpane",
})  # fmt: skip


@dataclass
class MesherEngine(RoleEngine):
    """Loads the configured TripoSR, depth and segmentation models; makes meshes."""

    roles: ClassVar[dict[str, str]] = ROLES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.query_chunk = CUDA_QUERY_CHUNK if self.runtime.on_cuda else CPU_QUERY_CHUNK

    def mesh(self, image: np.ndarray, options: MeshOptions) -> MeshOutput:
        """A mesh of one RGB or RGBA uint8 image. Outlines and depth are worked out at
        most ``WORK_SIDE`` px a side (a 4K upload's class scores would not fit), the
        depth model runs at most once."""
        clock = _Clock()
        work = _work_size(image.shape[:2])
        nearness = functools.cache(lambda: self._depth(image[..., :3], work))
        with self.runtime.counting():
            mask, source = self._foreground(image, work, nearness) if options.remove_background \
                else (None, "none")  # fmt: skip
            clock.lap("foreground")
            if options.engine == "triposr":
                mesh = self._triposr(image, mask, options)
            else:
                mesh = self._relief(image, mask, nearness(), options)
        clock.lap("reconstruct")
        if not mesh.face_count:
            raise InvalidParameter("image: no surface was found in it; try remove_background "
                                   "false or the other engine", param="image")  # fmt: skip
        mesh = normalized(decimate(mesh, options.max_faces))
        data = export(mesh, options.format)
        clock.lap("export")
        picture = preview(mesh, device=str(self.runtime.device)) if options.preview else None
        clock.lap("preview")
        return MeshOutput(data, MESH_TYPES[options.format], picture, len(mesh.vertices),
                          mesh.face_count, source, clock.laps)  # fmt: skip

    # -- foreground ------------------------------------------------------------

    def _foreground(
        self, image: np.ndarray, work: tuple[int, int], nearness: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray | None, Foreground]:
        """The object's mask at the work size, and where it came from."""
        if image.shape[2] == 4 and int(image[..., 3].min()) < 255:
            return _largest(_resize_mask(image[..., 3] > 127, work)), "alpha"
        if self._has("segment"):
            return _largest(self._segment(image[..., :3], work)), "segmentation"
        if self._has("depth"):
            return _largest(_near(nearness())), "depth"
        return None, "none"

    def _segment(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Pixels at ``size`` whose class is not a surrounding (wall, floor, sky...)."""
        model, processor = self._model("segment")
        inputs = processor(images=rgb, return_tensors="pt").to(self.runtime.device)
        with torch.inference_mode():
            logits = model(pixel_values=inputs["pixel_values"].to(self.dtype)).logits
        logits = nnf.interpolate(logits.float(), size=size, mode="bilinear")
        labels = logits.argmax(1)[0].cpu().numpy()
        names = model.config.id2label
        background = [i for i, name in names.items() if str(name).lower() in BACKGROUND_LABELS]
        return ~np.isin(labels, background)

    def _depth(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Relative nearness (larger is nearer) at ``size``, float32."""
        model, processor = self._model("depth")
        inputs = processor(images=rgb, return_tensors="pt").to(self.runtime.device)
        with torch.inference_mode():
            predicted = model(pixel_values=inputs["pixel_values"].to(self.dtype)).predicted_depth
        resized = nnf.interpolate(predicted.float()[:, None], size=size, mode="bicubic",
                                align_corners=False)  # fmt: skip
        return resized[0, 0].cpu().numpy()

    # -- engines ---------------------------------------------------------------

    def _relief(self, image: np.ndarray, mask: np.ndarray | None, nearness: np.ndarray,
                options: MeshOptions) -> Mesh:  # fmt: skip
        rows, cols = _grid(image.shape[:2], options.resolution, options.max_faces)
        grid = torch.from_numpy(nearness)[None, None]
        cut = None if mask is None else _resize_mask(mask, (rows, cols))
        depth = _unit(nnf.interpolate(grid, size=(rows, cols), mode="area")[0, 0].numpy(), cut)
        mesh = relief(depth, cut, options.relief_depth)
        mesh.texture = _texture(image[..., :3])
        return mesh

    def _triposr(self, image: np.ndarray, mask: np.ndarray | None, options: MeshOptions) -> Mesh:
        model: TripoSR = self._model("mesh")
        size = model.config.cond_image_size
        outline = None if mask is None else _resize_mask(mask, image.shape[:2])
        condition = _centred(image[..., :3], outline, size).to(self.runtime.device, self.dtype)
        with torch.inference_mode():
            triplane = model.scene_codes(condition)[0]
            density = self._density(model, triplane, options.resolution)
            vertices, faces = isosurface(density, TRIPOSR_THRESHOLD, model.config.radius)
            if not len(faces):
                return Mesh(vertices, faces)
            colors = self._query(model, triplane, torch.from_numpy(vertices))[1]
        colors_u8 = (colors.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return _triposr_axes(Mesh(vertices, faces, colors_u8))

    def _density(self, model: TripoSR, triplane: torch.Tensor, resolution: int) -> np.ndarray:
        axis = torch.linspace(-model.config.radius, model.config.radius, resolution)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        density, _ = self._query(model, triplane, grid)
        return density.reshape(resolution, resolution, resolution).numpy()

    def _query(self, model: TripoSR, triplane: torch.Tensor, points: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Density and colour at ``points`` in chunks on the device; a CUDA OOM halves
        the chunk (kept for later requests) down to ``MIN_QUERY_CHUNK``."""
        while True:
            try:
                parts = [model.query(triplane, chunk.to(self.runtime.device))
                         for chunk in torch.split(points, self.query_chunk)]  # fmt: skip
                return (torch.cat([p[0].cpu() for p in parts]),
                        torch.cat([p[1].cpu() for p in parts]))  # fmt: skip
            except torch.OutOfMemoryError as exc:
                self.runtime.release_after_oom()
                if self.query_chunk <= MIN_QUERY_CHUNK:
                    raise EngineOutOfMemory("out of GPU memory sampling the mesh's field; "
                                            "ask for a lower resolution") from exc  # fmt: skip
                self.query_chunk //= 2
                logger.warning("CUDA out of memory; query chunk now %d", self.query_chunk)

    # -- models ----------------------------------------------------------------

    def _load(self, role: str, name: str) -> Any:
        spec = self.store.manifest.for_task(name, role)  # type: ignore[arg-type]
        path = self.store.locate(spec.name)
        device = self.runtime.device
        if role == "mesh":
            return TripoSR.load(path).to(device, self.dtype)
        import transformers

        library: Any = transformers  # its typing is partial
        kind = "AutoModelForDepthEstimation" if role == "depth" \
            else "AutoModelForSemanticSegmentation"  # fmt: skip
        model = getattr(library, kind).from_pretrained(path, dtype=self.dtype)
        processor = library.AutoImageProcessor.from_pretrained(path)
        return model.to(device).eval(), processor


class _Clock:
    """Seconds per stage."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.mark
        self.mark = now


def _work_size(shape: tuple[int, int]) -> tuple[int, int]:
    """``shape`` scaled down to at most ``WORK_SIDE`` on its longer side."""
    height, width = shape
    ratio = min(1.0, WORK_SIDE / max(height, width))
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def _grid(shape: tuple[int, int], resolution: int, max_faces: int) -> tuple[int, int]:
    """Relief grid rows and columns: ``resolution`` on the longer side, fewer where the
    closed mesh (top, base: four triangles a cell; walls) would pass ``max_faces``."""
    height, width = shape
    side = resolution
    while side > 2:
        rows = max(2, round(side * height / max(height, width))) + 1
        cols = max(2, round(side * width / max(height, width))) + 1
        if 4 * (rows - 1) * (cols - 1) + 4 * (rows + cols) <= max_faces:
            return rows, cols
        side = int(side * 0.9)
    return 3, 3


def _unit(nearness: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Nearness spread over 0-1 by its 2nd and 98th percentiles (inside the mask)."""
    values = nearness[mask] if mask is not None and mask.any() else nearness
    low, high = np.percentile(values, [2, 98])
    spread: np.ndarray = np.clip((nearness - low) / max(float(high - low), 1e-6), 0, 1)
    return spread.astype(np.float32)


def _near(nearness: np.ndarray) -> np.ndarray:
    """The near region: over Otsu's threshold of the nearness."""
    from skimage import filters

    if float(nearness.max() - nearness.min()) < 1e-6:
        return np.ones(nearness.shape, bool)
    skimage: Any = filters  # untyped
    near: np.ndarray = nearness > skimage.threshold_otsu(nearness)
    return near


def _largest(mask: np.ndarray) -> np.ndarray | None:
    """The largest connected region, holes filled; None when there is none."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)  # type: ignore[no-any-return]


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (nnf.interpolate(tensor, size=size, mode="area")[0, 0] > 0.5).numpy()


def _texture(rgb: np.ndarray) -> np.ndarray:
    """The photo, its longest side at most ``TEXTURE_SIDE``."""
    height, width = rgb.shape[:2]
    if max(height, width) <= TEXTURE_SIDE:
        return np.ascontiguousarray(rgb)
    from PIL import Image

    ratio = TEXTURE_SIDE / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _centred(rgb: np.ndarray, mask: np.ndarray | None, size: int) -> torch.Tensor:
    """TripoSR's input: the object cropped to its mask, padded square so it fills
    ``FOREGROUND_RATIO`` of the side, on grey 0.5, resized to ``size`` -> [1, 3, S, S]."""
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    alpha = torch.ones(1, *rgb.shape[:2]) if mask is None else \
        torch.from_numpy(mask.astype(np.float32))[None]  # fmt: skip
    if mask is not None:
        rows, cols = np.nonzero(mask)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        image, alpha = image[:, top:bottom, left:right], alpha[:, top:bottom, left:right]
    side = int(max(image.shape[1:]) / FOREGROUND_RATIO) if mask is not None \
        else max(image.shape[1:])  # fmt: skip
    composed = image * alpha + 0.5 * (1 - alpha)
    canvas = torch.full((3, side, side), 0.5)
    top, left = (side - image.shape[1]) // 2, (side - image.shape[2]) // 2
    canvas[:, top : top + image.shape[1], left : left + image.shape[2]] = composed
    return nnf.interpolate(canvas[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)  # fmt: skip


def _triposr_axes(mesh: Mesh) -> Mesh:
    """TripoSR's frame (z up, the photo seen along +x) to glTF's (y up, facing +z)."""
    x, y, z = mesh.vertices.T
    vertices = np.stack([y, z, x], 1).astype(np.float32)  # a rotation: orientation kept
    return Mesh(vertices, mesh.faces, mesh.colors)
