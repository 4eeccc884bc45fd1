"""Image classifiers for the Vision deployment's tags and NSFW score, one interface over
three kinds of weights: a transformers repository (ViT), torchvision's MobileNetV2
ImageNet state dict, and Yahoo's open_nsfw graph (``TorchGraph``).

Each turns one RGB uint8 image into class probabilities with its own training-time
pre-processing, on the replica's device and dtype.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from services.errors import ModelNotReady
from services.models.manifest import ModelSpec

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_NSFW_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # open_nsfw's training mean


class Classifier(Protocol):
    """What the Vision engine asks of a classifier."""

    labels: list[str]
    multi_label: bool  # sigmoid per label (a tagger) rather than one softmax

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """The model's scores for one RGB uint8 image, as float32 on the CPU."""
        ...


def load_classifier(spec: ModelSpec, path: Path, device: torch.device, dtype: torch.dtype
                    ) -> Classifier:  # fmt: skip
    """The classifier ``spec`` describes, its weights read from ``path``."""
    if spec.architecture == "MobileNetV2":
        return MobileNetTagger.load(path, device, dtype)
    if spec.architecture == "OpenNSFW":
        return OpenNsfw.load(path, device, dtype)
    return HubClassifier.load(path, device, dtype)


def nsfw_index(classifier: Classifier) -> int:
    """Which output is the 'nsfw' class; a model without one cannot score NSFW."""
    for index, label in enumerate(classifier.labels):
        if "nsfw" in label.lower():
            return index
    raise ModelNotReady(f"the NSFW model has no 'nsfw' label: {classifier.labels}")


@dataclass
class HubClassifier:
    """A transformers image classifier with its own image processor."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    labels: list[str]
    multi_label: bool

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> HubClassifier:
        import transformers

        library: Any = transformers  # its typing is partial
        model = library.AutoModelForImageClassification.from_pretrained(path, dtype=dtype)
        processor = library.AutoImageProcessor.from_pretrained(path)
        config = model.config
        labels = [str(config.id2label[i]) for i in range(len(config.id2label))]
        multi = config.problem_type == "multi_label_classification"
        return cls(model.to(device).eval(), processor, device, dtype, labels, multi)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            result: torch.Tensor = self.model(**inputs).logits[0].float().cpu()
        return result


@dataclass
class _TorchClassifier:
    """A plain torch module with one softmax over ``labels``."""

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    labels: list[str]
    multi_label: bool = False


class MobileNetTagger(_TorchClassifier):
    """torchvision's MobileNetV2 with its ImageNet weights and labels; the input is
    prepared exactly as torchvision's ``IMAGENET1K_V1.transforms()`` does (shorter side
    to 256, antialiased bilinear; centre 224 crop; ImageNet mean and std)."""

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> MobileNetTagger:
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        model = mobilenet_v2(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        labels = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
        return cls(model.to(device, dtype).eval(), device, dtype, labels)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF  # noqa: N812

        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)
        tensor = TF.resize(tensor, [256], antialias=True)
        tensor = TF.center_crop(tensor, [224])
        tensor = TF.normalize(tensor.float() / 255.0, _IMAGENET_MEAN, _IMAGENET_STD)
        with torch.inference_mode():
            result: torch.Tensor = self.model(tensor[None].to(self.dtype))[0].float().cpu()
        return result


class OpenNsfw(_TorchClassifier):
    """Yahoo's open_nsfw, run from its imported graph; its outputs are already
    probabilities (sfw, nsfw), returned as log-probabilities so a softmax gives them
    back. Pre-processing as Yahoo's reference: 256x256 bilinear, centre 224 crop, a
    JPEG round trip (the model was trained on JPEG-decoded images), BGR minus mean."""

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> OpenNsfw:
        from services.models.onnx_graph import load_graph

        # fp32 always: the graph is small, and its fused-BN biases are large for fp16
        graph = load_graph(path).to(device, torch.float32).eval()
        return cls(graph, device, torch.float32, ["sfw", "nsfw"])

    def logits(self, image: np.ndarray) -> torch.Tensor:
        picture = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        picture = picture.resize((256, 256), Image.Resampling.BILINEAR).crop((16, 16, 240, 240))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG")
        decoded = np.asarray(Image.open(buffer), dtype=np.float32)
        bgr = decoded[:, :, ::-1] - _NSFW_MEAN_BGR
        tensor = torch.from_numpy(np.ascontiguousarray(bgr))[None].to(self.device, self.dtype)
        with torch.inference_mode():
            (probabilities,) = self.model(tensor)
        return torch.log(probabilities[0].float().cpu().clamp_min(1e-12))
