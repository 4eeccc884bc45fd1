"""Where a job item's output is stored, and what it is: the key names the format."""

from __future__ import annotations

import uuid

from services.imaging.convert import CONVERT_TYPES
from services.imaging.meshes import MESH_EXTENSIONS, MESH_TYPES

IMAGES_AREA = "images/"
IMAGE_NAME_PATTERN = r"^[0-9a-f]{32}\.(png|jpg|webp)$"

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "avif": "avif", "json": "json",
               **MESH_EXTENSIONS}  # fmt: skip
_OUTPUT_TYPES = {_EXTENSIONS[fmt]: kind for fmt, kind in
                 {**CONVERT_TYPES, **MESH_TYPES, "json": "application/json"}.items()}  # fmt: skip
_MESH_FILES = set(MESH_EXTENSIONS.values())
_PREVIEW_SUFFIX = ".preview.png"


def output_key(job_id: str, index: int, fmt: str) -> str:
    """Deterministic, so a re-run finds the output a crashed delivery already wrote."""
    return f"jobs/{job_id}/{index:05d}.{_EXTENSIONS[fmt]}"


def preview_key(key: str) -> str | None:
    """Where a mesh output's PNG render is stored beside it (None: not a mesh)."""
    stem, _, extension = key.rpartition(".")
    return f"{stem}{_PREVIEW_SUFFIX}" if extension in _MESH_FILES else None


def image_key(fmt: str) -> str:
    """A published image's key (OpenAI's images routes answering with a URL): random,
    so the URL is the capability, and under ``images/``, apart from the jobs."""
    return f"{IMAGES_AREA}{uuid.uuid4().hex}.{_EXTENSIONS[fmt]}"


def output_type(key: str) -> str:
    """The media type of an output, from the extension ``output_key`` gave it."""
    extension = key.rpartition(".")[2]
    return _OUTPUT_TYPES.get(extension, "application/octet-stream")
