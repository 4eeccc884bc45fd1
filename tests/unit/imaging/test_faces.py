"""Face geometry: alignment onto the FFHQ template, paste-back, face selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.imaging.faces import CROP, TEMPLATE, AlignedFace, Face, align, paste, select_faces
from tests.utils.images import astronaut


def face_at(cx: float, cy: float, size: float, score: float = 0.9) -> Face:
    """A face whose landmarks sit where the template puts them, scaled to ``size``."""
    landmarks = (TEMPLATE - CROP / 2) / CROP * size + np.array([cx, cy], np.float32)
    half = size / 2
    return Face((cx - half, cy - half, cx + half, cy + half), score, landmarks)


def image() -> np.ndarray:
    return astronaut(256).astype(np.float32) / 255


def test_align_puts_the_landmarks_on_the_template() -> None:
    (aligned,) = align(image(), [face_at(120, 100, 128)])
    assert aligned.crop.shape == (CROP, CROP, 3) and aligned.crop.dtype == np.float32
    moved = cv2.transform(aligned.face.landmarks[None], aligned.affine)[0]
    np.testing.assert_allclose(moved, TEMPLATE, atol=0.05)
    # the crop is the image magnified 4x around the face: its centre is the face's centre
    np.testing.assert_allclose(aligned.crop[256, 256], image()[100, 120], atol=0.05)


def test_degenerate_landmarks_are_skipped() -> None:
    collapsed = Face((0, 0, 10, 10), 0.9, np.full((5, 2), 5.0, np.float32))
    assert align(image(), [collapsed]) == []


def whole_frame_paste(
    background: np.ndarray, aligned: list[AlignedFace], restored: list[np.ndarray],
    scale: float, weight: float,
) -> np.ndarray:  # fmt: skip
    """The paste as facexlib does it, in floats over the whole frame: the reference the
    windowed integer paste must reproduce."""
    height, width = background.shape[:2]
    result = background.astype(np.float32) / 255
    for face, crop in zip(aligned, restored, strict=True):
        mixed = weight * crop + (1.0 - weight) * face.crop
        inverse = cv2.invertAffineTransform(face.affine) * scale
        inverse[:, 2] += 0.5 * (scale - 1)
        warped = cv2.warpAffine(mixed, inverse, (width, height), flags=cv2.INTER_LINEAR)
        ones = np.ones((CROP, CROP), np.float32)
        mask = cv2.warpAffine(ones, inverse, (width, height), flags=cv2.INTER_LINEAR)
        erosion = max(1, int(2 * scale))
        mask = cv2.erode(mask, np.ones((2 * erosion + 1, 2 * erosion + 1), np.uint8))
        blur = max(3, int(float(np.sqrt(mask.sum())) / 20) * 2 + 1)
        mask = cv2.erode(mask, np.ones((blur, blur), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0)[:, :, None]
        result = mask * warped + (1.0 - mask) * result
    return (np.clip(result, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("scale", [1, 2])
def test_pasting_the_unrestored_crop_gives_the_image_back(scale: int) -> None:
    """Restoration as identity: inside the feathered mask the round trip through the
    crop and back must reproduce the (resized) image; outside nothing changes."""
    aligned = align(image(), [face_at(128, 110, 96)])
    background = cv2.resize(astronaut(256), (256 * scale, 256 * scale),
                            interpolation=cv2.INTER_CUBIC)  # fmt: skip
    pasted = paste(background, aligned, [aligned[0].crop], float(scale), weight=1.0)
    assert pasted.shape == background.shape and pasted.dtype == np.uint8
    error = np.abs(pasted.astype(np.float32) - background).mean(axis=2) / 255
    assert error.mean() < 0.01
    corner = slice(0, 30 * scale)
    assert np.array_equal(pasted[corner, corner], background[corner, corner])


@pytest.mark.parametrize("scale", [1, 2])
def test_the_windowed_paste_equals_a_whole_frame_paste(scale: int) -> None:
    """Faces overlapping each other and the image's edge, restored to something else:
    the window-by-window integer paste gives the whole-frame float paste's pixels."""
    faces = [face_at(128, 110, 96), face_at(170, 120, 80), face_at(20, 240, 90)]
    aligned = align(image(), faces)
    restored = [np.clip(face.crop[::-1] * 0.8 + 0.1, 0, 1) for face in aligned]
    background = cv2.resize(astronaut(256), (256 * scale, 256 * scale),
                            interpolation=cv2.INTER_CUBIC)  # fmt: skip
    pasted = paste(background, aligned, restored, float(scale), weight=0.7)
    reference = whole_frame_paste(background, aligned, restored, float(scale), 0.7)
    assert np.abs(pasted.astype(int) - reference).max() <= 1
    assert (pasted != background).any()


def test_paste_keeps_gray_gray_alpha_untouched_and_16_bits() -> None:
    """A gray canvas gets the luma of the restored colour; an alpha plane is kept as it
    was; 16-bit canvases stay 16-bit at the same values as 8-bit ones, scaled."""
    aligned = align(image(), [face_at(128, 110, 96)])
    white = [np.ones_like(aligned[0].crop)]
    gray = cv2.cvtColor(astronaut(256), cv2.COLOR_RGB2GRAY)[:, :, None]
    alpha = np.full_like(gray, 77)
    pasted = paste(np.concatenate([gray, alpha], axis=2), aligned, white, 1.0, weight=1.0)
    assert pasted.shape == (256, 256, 2)
    assert pasted[110, 128, 0] == 255 and np.array_equal(pasted[:, :, 1], alpha[:, :, 0])
    deep = astronaut(256).astype(np.uint16) * 257
    pasted16 = paste(deep, aligned, white, 1.0, weight=1.0)
    pasted8 = paste(astronaut(256), aligned, white, 1.0, weight=1.0)
    assert pasted16.dtype == np.uint16
    assert np.abs(pasted16.astype(int) // 257 - pasted8).max() <= 1


def test_paste_weight_blends_restored_and_original() -> None:
    source = astronaut(256)
    aligned = align(image(), [face_at(128, 110, 96)])
    white = np.ones_like(aligned[0].crop)
    none = paste(source, aligned, [white], 1.0, weight=0.0) / 255
    half = paste(source, aligned, [white], 1.0, weight=0.5) / 255
    full = paste(source, aligned, [white], 1.0, weight=1.0) / 255
    centre = (110, 128)
    original = source[centre].mean() / 255
    assert abs(none[centre].mean() - original) < 0.02
    assert full[centre].mean() > 0.99
    assert abs(half[centre].mean() - (original + 1.0) / 2) < 0.02


def test_select_faces_by_centre_or_size() -> None:
    faces = [face_at(30, 30, 40), face_at(128, 128, 20), face_at(200, 60, 80)]
    assert select_faces(faces, 256, 256, only_center=True, max_faces=10) == [faces[1]]
    assert select_faces(faces, 256, 256, only_center=False, max_faces=2) == [faces[2], faces[0]]
    assert select_faces([], 256, 256, only_center=True, max_faces=2) == []
