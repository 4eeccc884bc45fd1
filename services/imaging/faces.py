"""Face geometry: choose faces, align each to the 512x512 FFHQ crop, paste restored
crops back with a soft mask. Pure numpy/OpenCV, the same arithmetic as facexlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.imaging.codec import LUMA

CROP = 512
# Where the five landmarks sit in a 512x512 FFHQ-aligned face (facexlib's template).
TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], np.float32,
)  # fmt: skip
_BORDER = (135 / 255, 133 / 255, 132 / 255)  # FFHQ's mean colour fills outside the image
_MARGIN = 4  # px of zero mask kept around a face's window, beyond the bilinear edge


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
    canvas: np.ndarray, aligned: list[AlignedFace], restored: list[np.ndarray],
    scale: float, weight: float,
) -> np.ndarray:  # fmt: skip
    """Blend each restored crop into a copy of ``canvas`` (the image resized by
    ``scale``: HxWxC integers, gray as one channel, alpha last and left alone): warped
    back by the inverse transform, mixed with the unrestored crop by ``weight`` (1:
    fully restored), under a mask eroded and feathered at its edge.

    Floats exist only over each face's footprint, never at the output's size: the
    warp, the mask and the blend run on the window the crop lands in, which gives the
    same pixels as a whole-frame paste (the mask is zero well inside the window's edge).
    """
    result = canvas.copy()
    height, width, channels = canvas.shape
    color = slice(0, 3 if channels >= 3 else 1)
    peak = 65535.0 if canvas.dtype == np.uint16 else 255.0
    for face, crop in zip(aligned, restored, strict=True):
        inverse = cv2.invertAffineTransform(face.affine) * scale
        inverse[:, 2] += 0.5 * (scale - 1)  # pixel centres move when the image grows
        window = _footprint(inverse, width, height)
        if window is None:
            continue
        left, top, right, bottom = window
        inverse[:, 2] -= (left, top)  # the same transform, into the window
        size = (right - left, bottom - top)
        mixed = weight * crop + (1.0 - weight) * face.crop
        warped = cv2.warpAffine(mixed, inverse, size, flags=cv2.INTER_LINEAR)
        if color.stop == 1:
            warped = (warped @ np.asarray(LUMA, np.float32))[:, :, None]
        mask = _soft_mask(inverse, size, scale)
        region = result[top:bottom, left:right, color]
        blended = mask * warped + (1.0 - mask) * (region.astype(np.float32) / peak)
        region[...] = (np.clip(blended, 0.0, 1.0) * peak + 0.5).astype(canvas.dtype)
    return result


def _footprint(inverse: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The window (left, top, right, bottom) of the output that the crop lands on, with
    a margin for the bilinear edge, clipped to the image; None when it misses it."""
    corners = np.array([[0, 0], [CROP, 0], [0, CROP], [CROP, CROP]], np.float32)
    landed = cv2.transform(corners[None], inverse)[0]
    left, top = np.floor(landed.min(axis=0)).astype(int) - _MARGIN
    right, bottom = np.ceil(landed.max(axis=0)).astype(int) + _MARGIN
    left, top = max(int(left), 0), max(int(top), 0)
    right, bottom = min(int(right), width), min(int(bottom), height)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _soft_mask(inverse: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """Where the crop lands, shrunk a little and blurred so no seam shows."""
    ones = np.ones((CROP, CROP), np.float32)
    mask = cv2.warpAffine(ones, inverse, size, flags=cv2.INTER_LINEAR)
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


def blur_faces(pixels: np.ndarray, faces: list[Face], method: str = "blur") -> np.ndarray:
    """Anonymise each face of an HxWxC integer image (a copy): its box, grown by a fifth
    on every side, is pixelated into blocks of a tenth of the face (``pixelate``) or
    blurred with a sigma of a fifth of the face (``blur``), through an elliptical mask
    so no square edge shows. Alpha, if any, is left as it was."""
    result = pixels.copy()
    height, width = pixels.shape[:2]
    color = slice(0, 3) if pixels.ndim == 3 and pixels.shape[2] >= 3 else slice(0, 1)
    for face in faces:
        x0, y0, x1, y1 = face.box
        grow_x, grow_y = (x1 - x0) / 5, (y1 - y0) / 5
        left, top = max(0, int(x0 - grow_x)), max(0, int(y0 - grow_y))
        right, bottom = (
            min(width, int(np.ceil(x1 + grow_x))),
            min(height, int(np.ceil(y1 + grow_y))),
        )
        if right - left < 2 or bottom - top < 2:
            continue
        window = result[top:bottom, left:right]
        region = (window if window.ndim == 3 else window[:, :, None])[:, :, color]
        hidden = _hide(region.astype(np.float32), method)
        ellipse = np.zeros(region.shape[:2], np.float32)
        center = ((right - left) // 2, (bottom - top) // 2)
        cv2.ellipse(ellipse, center, center, 0, 0, 360, 1.0, -1)
        mask: np.ndarray = cv2.GaussianBlur(ellipse, (0, 0), max(1.0, min(center) / 8))[:, :, None]
        mixed = hidden * mask + region.astype(np.float32) * (1 - mask)
        peak = np.iinfo(pixels.dtype).max
        region[...] = np.clip(np.rint(mixed), 0, peak).astype(pixels.dtype)
    return result


def _hide(region: np.ndarray, method: str) -> np.ndarray:
    rows, cols = region.shape[:2]
    if method == "pixelate":
        block = max(2, max(rows, cols) // 10)
        small = cv2.resize(region, (max(1, cols // block), max(1, rows // block)),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        hidden = cv2.resize(small, (cols, rows), interpolation=cv2.INTER_NEAREST)
    else:
        hidden = cv2.GaussianBlur(region, (0, 0), max(rows, cols) / 5)
    return hidden.reshape(region.shape)
