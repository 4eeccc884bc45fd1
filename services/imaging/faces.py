"""Face geometry: choose faces, align each to the 512x512 FFHQ crop, paste restored
crops back with a soft mask. Pure numpy/OpenCV, the same arithmetic as facexlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP = 512
# Where the five landmarks sit in a 512x512 FFHQ-aligned face (facexlib's template).
TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], np.float32,
)  # fmt: skip
_BORDER = (135 / 255, 133 / 255, 132 / 255)  # FFHQ's mean colour fills outside the image


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1), confidence, and five landmarks (x, y):
    left eye, right eye, nose, left and right mouth corners, as seen in the image."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class AlignedFace:
    """A face cut out to the template: the crop (512x512x3 float RGB in [0, 1]) and the
    affine matrix that took the image there."""

    face: Face
    crop: np.ndarray
    affine: np.ndarray  # 2x3, image -> crop


def select_faces(
    faces: list[Face], width: int, height: int, only_center: bool, max_faces: int
) -> list[Face]:
    """The faces to restore: the one nearest the centre, or the ``max_faces`` largest."""
    if not faces:
        return []
    if only_center:
        return [min(faces, key=lambda f: _distance_to(f, width / 2, height / 2))]
    return sorted(faces, key=lambda f: f.area, reverse=True)[:max_faces]


def align(image: np.ndarray, faces: list[Face]) -> list[AlignedFace]:
    """Warp each face of an RGB float image onto the template by a similarity transform."""
    aligned = []
    for face in faces:
        affine, _ = cv2.estimateAffinePartial2D(
            face.landmarks.astype(np.float32), TEMPLATE, method=cv2.LMEDS
        )
        if affine is None:  # degenerate landmarks: no transform fits them
            continue
        crop = cv2.warpAffine(image, affine, (CROP, CROP), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=_BORDER)  # fmt: skip
        aligned.append(AlignedFace(face, crop, affine))
    return aligned


def paste(
    background: np.ndarray, aligned: list[AlignedFace], restored: list[np.ndarray],
    scale: float, weight: float,
) -> np.ndarray:  # fmt: skip
    """Blend each restored crop into ``background`` (the image, resized by ``scale``):
    warped back by the inverse transform, mixed with the unrestored crop by ``weight``
    (1: fully restored), under a mask eroded and feathered at its edge."""
    height, width = background.shape[:2]
    result = background.copy()
    for face, crop in zip(aligned, restored, strict=True):
        mixed = weight * crop + (1.0 - weight) * face.crop
        inverse = cv2.invertAffineTransform(face.affine) * scale
        inverse[:, 2] += 0.5 * (scale - 1)  # pixel centres move when the image grows
        warped = cv2.warpAffine(mixed, inverse, (width, height), flags=cv2.INTER_LINEAR)
        mask = _soft_mask(inverse, width, height, scale)
        result = mask * warped + (1.0 - mask) * result
    pasted: np.ndarray = np.clip(result, 0.0, 1.0).astype(np.float32)
    return pasted


def _soft_mask(inverse: np.ndarray, width: int, height: int, scale: float) -> np.ndarray:
    """Where the crop lands, shrunk a little and blurred so no seam shows."""
    ones = np.ones((CROP, CROP), np.float32)
    mask = cv2.warpAffine(ones, inverse, (width, height), flags=cv2.INTER_LINEAR)
    erosion = max(1, int(2 * scale))
    mask = cv2.erode(mask, np.ones((2 * erosion + 1, 2 * erosion + 1), np.uint8))
    face_width = float(np.sqrt(mask.sum()))
    blur = max(3, int(face_width / 20) * 2 + 1)
    mask = cv2.erode(mask, np.ones((blur, blur), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0)
    return mask[:, :, None]


def _distance_to(face: Face, x: float, y: float) -> float:
    center_x, center_y = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    return float(np.hypot(center_x - x, center_y - y))
