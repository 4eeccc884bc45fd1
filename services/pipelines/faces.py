"""The face pipeline: detect, align, restore (batched), upscale the background, paste.

It runs inside the FaceRestorer: detection and the geometry on CPU threads (never on
the replica's event loop), the crops through the batched restorer, and the background
through the Upscaler at the same time. Images arrive and leave as integers; floats
exist only inside the worker threads' geometry, at the input's size or over a face's
window, never at the output's size. An image without a face is a result (zero faces,
the background as asked), not an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from services.config import Settings
from services.errors import InvalidParameter
from services.imaging.codec import DecodedImage, color_plane, to_float, to_uint8
from services.imaging.faces import (
    CROP,
    AlignedFace,
    Face,
    align,
    blur_faces,
    paste,
    select_faces,
)
from services.models.faces import FaceCrops
from services.pipelines.upscale import TileBackend, UpscaleOptions, upscale

Detect = Callable[[str, np.ndarray], list[Face]]
Restore = Callable[[FaceCrops], Awaitable[np.ndarray]]


DEFAULT_MAX_FACES = 10  # faces restored when a request does not say (largest first)


@dataclass(frozen=True)
class FaceOptions:
    """What a client asks of face restoration."""

    model: str
    detector: str
    weight: float = 1.0  # blend of restored and original face (1: fully restored)
    fidelity: float = 0.5  # CodeFormer only: 0 best quality, 1 closest to the input
    upscale: int = 1  # background scale; >1 runs the background through an upscaler
    background_model: str | None = None  # the Upscaler's model for it (x2/x4 native)
    background_native_scale: int = 4
    only_center_face: bool = False
    max_faces: int = DEFAULT_MAX_FACES

    @property
    def models(self) -> list[str]:
        """The manifest models a restoration loads: restorer, detector, and the
        background's upscaler when it upscales."""
        background = [self.background_model] if self.upscale > 1 and self.background_model else []
        return [self.model, self.detector, *background]

    def check(self, settings: Settings) -> None:
        """Refuse out-of-range options with a message naming the field."""
        for name, value in (("weight", self.weight), ("fidelity", self.fidelity)):
            if not 0.0 <= value <= 1.0:
                raise InvalidParameter(f"{name} must be within 0 and 1, got {value:g}")
        if not 1 <= self.upscale <= 4:
            raise InvalidParameter(f"upscale must be 1 to 4, got {self.upscale}")
        if not 1 <= self.max_faces <= settings.max_faces:
            raise InvalidParameter(f"max_faces must be 1 to {settings.max_faces}")


AnonymizeMethod = Literal["blur", "pixelate"]


@dataclass(frozen=True)
class DetectOptions:
    """What a client asks of face detection, and of anonymising every face found."""

    detector: str
    min_score: float = 0.0  # faces under it are left out (face_confidence is the floor)
    method: AnonymizeMethod = "blur"  # the blur_faces step's

    @property
    def models(self) -> list[str]:
        return [self.detector]


def face_json(face: Face) -> dict[str, Any]:
    """A detected face as the API reports it: box (x0, y0, x1, y1), score, and the five
    landmarks (left eye, right eye, nose, left and right mouth corner) in pixels."""
    return {
        "box": [round(float(value), 1) for value in face.box],
        "score": round(float(face.score), 4),
        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks],
    }


async def detect_faces(image: DecodedImage, options: DetectOptions, detect: Detect) -> list[Face]:
    """Every face in ``image`` at or above ``min_score``, most confident first."""
    plane = await asyncio.to_thread(lambda: to_uint8(color_plane(image)))
    faces = await asyncio.to_thread(detect, options.detector, plane)
    return sorted((f for f in faces if f.score >= options.min_score), key=lambda f: -f.score)


async def anonymize_faces(
    image: DecodedImage, options: DetectOptions, detect: Detect
) -> tuple[DecodedImage, list[Face]]:
    """``image`` with every detected face blurred or pixelated (none left out: no
    ``max_faces`` here), and the faces."""
    faces = await detect_faces(image, options, detect)
    pixels = await asyncio.to_thread(blur_faces, image.pixels, faces, options.method)
    return DecodedImage(pixels, image.bit_depth, image.source_format), faces


@dataclass(frozen=True)
class FaceReport:
    """A restored face as reported to the client: where it was and how sure."""

    box: tuple[int, int, int, int]
    score: float


@dataclass(frozen=True)
class FaceResult:
    pixels: np.ndarray  # HxWxC, the input's dtype and channels, at the output size
    faces: list[FaceReport]
    detected: int  # faces found before only_center_face / max_faces chose among them


async def restore_faces(
    image: DecodedImage,
    options: FaceOptions,
    detect: Detect,
    restore: Restore,
    tiles: TileBackend,
    settings: Settings,
    request_id: str = "",
) -> FaceResult:
    """Restore the faces of ``image`` onto its (optionally upscaled) background."""
    color = await asyncio.to_thread(_color_of, image)
    faces = await asyncio.to_thread(detect, options.detector, to_uint8(color_plane(image)))
    chosen = select_faces(faces, image.width, image.height, options.only_center_face,
                          options.max_faces)  # fmt: skip
    aligned = await asyncio.to_thread(align, color, chosen)
    crops = np.stack([face.crop for face in aligned]) if aligned else None
    restoring = _restore(restore, options, crops, request_id)
    background, restored = await asyncio.gather(
        _background(image, options, tiles, settings), restoring
    )
    pixels = await asyncio.to_thread(_compose, background, aligned, list(restored), options)
    reports = [_report(face.face) for face in aligned]
    return FaceResult(pixels, reports, len(faces))


def _compose(
    background: np.ndarray, aligned: list[AlignedFace], restored: list[np.ndarray],
    options: FaceOptions,
) -> np.ndarray:  # fmt: skip
    """Paste the faces onto the background, which has the input's channels (gray stays
    gray, alpha is kept) and integer dtype; floats only over each face's window."""
    if not aligned:
        return background
    return paste(background, aligned, restored, float(options.upscale), options.weight)


async def _restore(
    restore: Restore, options: FaceOptions, crops: np.ndarray | None, request_id: str
) -> np.ndarray:
    if crops is None:
        return np.empty((0, CROP, CROP, 3), np.float32)
    return await restore(FaceCrops(options.model, crops, options.fidelity, request_id))


async def _background(
    image: DecodedImage, options: FaceOptions, tiles: TileBackend, settings: Settings
) -> np.ndarray:
    if options.upscale == 1 or options.background_model is None:
        if options.upscale == 1:
            return image.pixels
        raise InvalidParameter("upscale > 1 needs a background model")
    asked = UpscaleOptions(options.background_model, scale=float(options.upscale))
    result = await upscale(image, asked, options.background_native_scale, tiles, settings)
    assert result.pixels is not None  # no JPEG was asked for
    return result.pixels


def _color_of(image: DecodedImage) -> np.ndarray:
    """The colour as contiguous float32 RGB in [0, 1], for the face geometry."""
    return np.ascontiguousarray(to_float(color_plane(image)))


def _report(face: Face) -> FaceReport:
    x0, y0, x1, y1 = (round(v) for v in face.box)
    return FaceReport((x0, y0, x1, y1), round(face.score, 4))
