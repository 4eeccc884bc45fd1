"""Face geometry: alignment onto the FFHQ template, paste-back, face selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.imaging.faces import CROP, TEMPLATE, Face, align, paste, select_faces
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


@pytest.mark.parametrize("scale", [1, 2])
def test_pasting_the_unrestored_crop_gives_the_image_back(scale: int) -> None:
    """Restoration as identity: inside the feathered mask the round trip through the
    crop and back must reproduce the (resized) image; outside nothing changes."""
    source = image()
    aligned = align(source, [face_at(128, 110, 96)])
    background = cv2.resize(source, (256 * scale, 256 * scale), interpolation=cv2.INTER_CUBIC)
    background = np.clip(background, 0.0, 1.0)
    pasted = paste(background, aligned, [aligned[0].crop], float(scale), weight=1.0)
    assert pasted.shape == background.shape
    error = np.abs(pasted - background).mean(axis=2)
    assert error.mean() < 0.01
    corner = slice(0, 30 * scale)
    assert np.array_equal(pasted[corner, corner], background[corner, corner])


def test_paste_weight_blends_restored_and_original() -> None:
    source = image()
    aligned = align(source, [face_at(128, 110, 96)])
    white = np.ones_like(aligned[0].crop)
    none = paste(source, aligned, [white], 1.0, weight=0.0)
    half = paste(source, aligned, [white], 1.0, weight=0.5)
    full = paste(source, aligned, [white], 1.0, weight=1.0)
    centre = (110, 128)
    assert abs(none[centre].mean() - source[centre].mean()) < 0.02
    assert full[centre].mean() > 0.99
    expected = (source[centre].mean() + 1.0) / 2
    assert abs(half[centre].mean() - expected) < 0.02


def test_select_faces_by_centre_or_size() -> None:
    faces = [face_at(30, 30, 40), face_at(128, 128, 20), face_at(200, 60, 80)]
    assert select_faces(faces, 256, 256, only_center=True, max_faces=10) == [faces[1]]
    assert select_faces(faces, 256, 256, only_center=False, max_faces=2) == [faces[2], faces[0]]
    assert select_faces([], 256, 256, only_center=True, max_faces=2) == []
