"""RetinaFace: the published state-dict layout, anchors, decoding and detection with
the hand-set tiny detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from services.errors import ModelNotReady
from services.imaging.faces import CROP, TEMPLATE
from services.models.manifest import load_manifest
from services.models.retinaface import (
    RetinaFace,
    RetinaFaceDetector,
    backbone_of,
    load_retinaface,
    priors,
)
from services.models.store import ModelStore
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_BLIND_DETECTOR, TINY_DETECTOR


def detector(tiny_store: tuple[Path, Path], name: str) -> RetinaFaceDetector:
    root, manifest = tiny_store
    path = ModelStore(root, load_manifest(manifest)).locate(name)
    return RetinaFaceDetector(load_retinaface(path), torch.device("cpu"), confidence=0.8)


@pytest.mark.parametrize(
    ("backbone", "keys"),
    [
        ("resnet50", ["body.conv1.weight", "body.layer2.0.conv1.weight", "body.layer4.2.bn3.bias"]),
        ("mobilenet0.25", ["body.stage1.0.0.weight", "body.stage3.1.4.running_var"]),
    ],
)
def test_state_dict_has_the_published_names(backbone: str, keys: list[str]) -> None:
    """The names of facexlib's detection_*_Final.pth files, so they load unchanged."""
    state = RetinaFace(backbone).state_dict()
    shared = ["fpn.output1.0.weight", "fpn.merge2.1.running_mean", "ssh1.conv3X3.0.weight",
              "ssh3.conv7x7_3.1.weight", "ClassHead.0.conv1x1.weight",
              "BboxHead.1.conv1x1.bias", "LandmarkHead.2.conv1x1.weight"]  # fmt: skip
    assert set(keys + shared) <= set(state)
    assert not any(key.startswith(("body.fc", "body.avg")) for key in state)
    assert backbone_of(state) == backbone
    assert state["LandmarkHead.0.conv1x1.weight"].shape[0] == 20  # 2 anchors x 5 points


def test_dataparallel_prefixes_are_dropped(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in RetinaFace("mobilenet0.25").state_dict().items()}
    torch.save(state, tmp_path / "parallel.pth")
    assert isinstance(load_retinaface(tmp_path / "parallel.pth"), RetinaFace)


def test_priors_follow_the_heads_order() -> None:
    anchors = priors(64, 96)
    cells = [(8, 12), (4, 6), (2, 3)]  # strides 8, 16, 32
    assert len(anchors) == sum(2 * h * w for h, w in cells)
    first = anchors[0].tolist()
    assert first == pytest.approx([4 / 96, 4 / 64, 16 / 96, 16 / 64])
    level2 = anchors[2 * 8 * 12].tolist()  # first anchor of stride 16: 64 px
    assert level2 == pytest.approx([8 / 96, 8 / 64, 64 / 96, 64 / 64])


def test_tiny_detector_finds_its_64px_faces(tiny_store: tuple[Path, Path]) -> None:
    faces = detector(tiny_store, TINY_DETECTOR).detect(astronaut(128))
    assert faces and all(face.score == pytest.approx(1 / (1 + np.exp(-4)), abs=1e-4)
                         for face in faces)  # fmt: skip
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert (x1 - x0, y1 - y0) == pytest.approx((64, 64), abs=1e-3)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        # decoded landmarks: the template's layout, scaled from 512 to the 64 px box
        np.testing.assert_allclose(face.landmarks, centre + (TEMPLATE - CROP / 2) / 8, atol=1e-3)
    # every cell scored the same; NMS (IoU 0.4) thinned them to boxes that barely overlap
    overlaps = box_iou(torch.tensor([f.box for f in faces]), torch.tensor([f.box for f in faces]))
    assert len(faces) > 4 and (overlaps - torch.eye(len(faces))).max() <= 0.4


def test_blind_detector_finds_nothing(tiny_store: tuple[Path, Path]) -> None:
    assert detector(tiny_store, TINY_BLIND_DETECTOR).detect(astronaut(128)) == []


def test_a_detector_absent_from_the_store_names_the_fix(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, load_manifest())
    with pytest.raises(ModelNotReady, match="pixserve models pull retinaface-resnet50"):
        store.locate("retinaface-resnet50")
