"""Tiny image-to-3D models in their real on-disk layouts, so the real loading code runs:
TripoSR as the official repository holds it (``config.yaml`` with an OmegaConf
reference, ``model.ckpt`` with transformers 4.x ViT key names, the DINO config beside
it), and Depth Anything and SegFormer repositories written by ``save_pretrained``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import yaml

from services.models.triposr import TripoConfig, TripoSR, vit_name

TINY_TRIPOSR = "tiny-triposr"
TINY_DEPTH = "tiny-depth-anything"
TINY_SEGMENTER = "tiny-segformer"
SEGMENT_LABELS = ["wall", "person", "sky", "cat"]
# the official config.yaml of stabilityai/TripoSR (as its model card's code reads it)
OFFICIAL_TRIPOSR_CONFIG = {
    "cond_image_size": 512,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 32, "num_channels": 1024},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 16,
                 "attention_head_dim": 64, "num_layers": 16, "cross_attention_dim": 768},
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 1024, "out_channels": 40},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {"radius": 0.87, "feature_reduction": "concat", "density_activation": "exp",
                 "density_bias": -1.0, "num_samples_per_ray": 128},
}  # fmt: skip
TRIPOSR_CONFIG = {  # the official layout at test width
    **OFFICIAL_TRIPOSR_CONFIG,
    "cond_image_size": 64,
    "image_tokenizer": {"pretrained_model_name_or_path": "dino"},
    "tokenizer": {"plane_size": 8, "num_channels": 32},
    "backbone": {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 2,
                 "attention_head_dim": 16, "num_layers": 1, "cross_attention_dim": 32,
                 "norm_num_groups": 8},
    "post_processor": {"in_channels": 32, "out_channels": 8},
    "decoder": {"in_channels": 24, "n_neurons": 16, "n_hidden_layers": 2, "activation": "silu"},
}  # fmt: skip
TINY_DINO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "image_size": 32, "patch_size": 8,
             "qkv_bias": True}  # fmt: skip


def mesh_entries(root: Path) -> list[dict[str, object]]:
    """The three tiny models written under ``root``, as manifest entries."""
    write_triposr(root / TINY_TRIPOSR)
    _depth(root / TINY_DEPTH)
    _segmenter(root / TINY_SEGMENTER)
    return [_entry(TINY_TRIPOSR, "mesh", "TripoSR"), _entry(TINY_DEPTH, "depth", "DepthAnything"),
            _entry(TINY_SEGMENTER, "segment", "SegFormer")]  # fmt: skip


def write_triposr(
    folder: Path, config: dict[str, Any] | None = None, dino: dict[str, Any] | None = TINY_DINO,
    inside: float = 0.5,
) -> None:  # fmt: skip
    """A random TripoSR whose density crosses the surface threshold (25) for any image
    (its bias puts that share of a grey image's field ``inside``), so the isosurface is
    not empty; saved as the official repository lays it out. ``config`` defaults to the
    tiny one; ``dino`` None leaves the ViT's config to the known DINO ViT-B/16."""
    from transformers import ViTConfig

    config = config or TRIPOSR_CONFIG
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if dino is not None:
        ViTConfig(**dino).save_pretrained(folder / "dino")
    torch.manual_seed(3)
    model = TripoSR(TripoConfig.read(folder))
    last = model.decoder.layers[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight[0] *= 8.0  # a field that varies, so a surface has a shape
        side = int(config["cond_image_size"])
        grey = torch.full((1, 3, side, side), 0.5)
        axis = torch.linspace(-0.8, 0.8, 16)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        density, _ = model.query(model.scene_codes(grey)[0], grid)
        level = float(torch.quantile(density, 1.0 - inside))
        last.bias[0] += math.log(25.0) - math.log(level)
    state = {vit_name(key, newer=False): value for key, value in model.state_dict().items()}
    torch.save(state, folder / "model.ckpt")


def _depth(folder: Path) -> None:
    import transformers

    library: Any = transformers  # its typing is partial
    torch.manual_seed(4)
    backbone = library.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )  # fmt: skip
    config = library.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
    )  # fmt: skip
    library.DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    processor = library.DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14
    )
    processor.save_pretrained(folder)


def _segmenter(folder: Path) -> None:
    import transformers

    library: Any = transformers  # its typing is partial
    torch.manual_seed(5)
    config = library.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=len(SEGMENT_LABELS),
        id2label=dict(enumerate(SEGMENT_LABELS)),
        label2id={label: i for i, label in enumerate(SEGMENT_LABELS)},
    )  # fmt: skip
    library.SegformerForSemanticSegmentation(config).save_pretrained(folder)
    library.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


def _entry(name: str, task: str, architecture: str) -> dict[str, object]:
    return {"name": name, "task": task, "architecture": architecture, "scale": 1,
            "license": "test-only", "description": "random weights for tests",
            "sources": [{"kind": "local", "filename": name}]}  # fmt: skip


def checkpoint_keys(folder: Path) -> list[str]:
    """The keys ``model.ckpt`` holds, as written."""
    return list(torch.load(folder / "model.ckpt", map_location="cpu", weights_only=True))


def manifest_names(path: Path) -> list[str]:
    return [entry["name"] for entry in json.loads(path.read_text())["models"]]
