"""TripoSR (MIT): one image to a triplane NeRF, queried on a grid for marching cubes.

The modules carry the names of the official checkpoint (``stabilityai/TripoSR``:
``config.yaml`` and ``model.ckpt``) so it loads key for key: DINO ViT-B/16 image tokens
(transformers' ``ViTModel``), learned triplane tokens refined by a 1D transformer that
cross-attends to them, a transposed-convolution upsampler, and an MLP decoding each
point's three plane features into density and colour. Written from the published
architecture; the code of VAST-AI-Research/TripoSR was read for its names and config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
import yaml
from torch import nn

from services.errors import ModelNotReady

# facebook/dino-vitb16's config.json, which the checkpoint's image tokenizer names and
# which `models pull` does not fetch: known here, so no hub is asked at load time
DINO_VITB16 = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
}  # fmt: skip
# transformers 5 renamed ViT's modules; the checkpoint keeps the 4.x names: (4.x, 5),
# applied in this order (attention.output.dense before output.dense)
VIT_NAMES = (
    (".encoder.layer.", ".layers."),
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TripoConfig:
    """The parts of ``config.yaml`` the architecture reads."""

    cond_image_size: int
    vit: dict[str, Any]
    plane_size: int
    plane_channels: int
    heads: int
    head_dim: int
    layers: int
    cross_dim: int
    norm_groups: int
    triplane_channels: int
    mlp_neurons: int
    mlp_hidden_layers: int
    activation: str
    radius: float
    density_activation: str
    density_bias: float

    @classmethod
    def read(cls, folder: Path) -> TripoConfig:
        """``folder/config.yaml``, ``${a.b}`` references resolved; the ViT's config from
        ``folder/<pretrained_model_name_or_path>/config.json`` when the folder has it,
        else the known DINO ViT-B/16 one."""
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        raw = _resolve(raw, raw)
        tokenizer, backbone = raw["tokenizer"], raw["backbone"]
        decoder, renderer = raw["decoder"], raw["renderer"]
        return cls(
            cond_image_size=int(raw["cond_image_size"]),
            vit=_vit_config(folder, raw["image_tokenizer"]),
            plane_size=int(tokenizer["plane_size"]),
            plane_channels=int(tokenizer["num_channels"]),
            heads=int(backbone.get("num_attention_heads", 16)),
            head_dim=int(backbone.get("attention_head_dim", 88)),
            layers=int(backbone.get("num_layers", 1)),
            cross_dim=int(backbone["cross_attention_dim"]),
            norm_groups=int(backbone.get("norm_num_groups", 32)),
            triplane_channels=int(raw["post_processor"]["out_channels"]),
            mlp_neurons=int(decoder["n_neurons"]),
            mlp_hidden_layers=int(decoder["n_hidden_layers"]),
            activation=str(decoder.get("activation", "relu")),
            radius=float(renderer["radius"]),
            density_activation=str(renderer.get("density_activation", "trunc_exp")),
            density_bias=float(renderer.get("density_bias", -1.0)),
        )


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """OmegaConf's ``${path}`` interpolation, for the whole-value references the
    official config uses."""
    if isinstance(node, dict):
        return {key: _resolve(value, root) for key, value in node.items()}
    if isinstance(node, str) and (found := re.fullmatch(r"\$\{([\w.]+)\}", node)):
        value: Any = root
        for part in found.group(1).split("."):
            value = value[part]
        return _resolve(value, root)
    return node


def _vit_config(folder: Path, tokenizer: dict[str, Any]) -> dict[str, Any]:
    import json

    name = str(tokenizer.get("pretrained_model_name_or_path", "facebook/dino-vitb16"))
    local = folder / name / "config.json"
    if local.is_file():
        return dict(json.loads(local.read_text()))
    if name == "facebook/dino-vitb16":
        return dict(DINO_VITB16)
    raise ModelNotReady(f"TripoSR's image tokenizer {name!r} has no config.json beside "
                        "config.yaml; only facebook/dino-vitb16 is known")  # fmt: skip


class ImageTokenizer(nn.Module):
    """DINO ViT patch tokens of the normalised image (``image_tokenizer.model``)."""

    def __init__(self, vit: dict[str, Any]) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        self.model = ViTModel(ViTConfig(**vit))
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("image_mean", mean.reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", std.reshape(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in 0-1 -> [B, tokens, hidden]."""
        normalised = (images - self.get_buffer("image_mean")) / self.get_buffer("image_std")
        out = self.model(normalised, interpolate_pos_encoding=True)
        return out.last_hidden_state  # type: ignore[no-any-return]


class TriplaneTokens(nn.Module):
    """The learned triplane the transformer refines (``tokenizer.embeddings``)."""

    def __init__(self, plane_size: int, channels: int) -> None:
        super().__init__()
        self.plane_size = plane_size
        self.embeddings = nn.Parameter(
            torch.randn(3, channels, plane_size, plane_size) / math.sqrt(channels)
        )

    def forward(self, batch: int) -> torch.Tensor:
        """[B, C, 3 * P * P]: the three planes' cells as one token sequence."""
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(self.embeddings.shape[1], -1)
        return tokens.unsqueeze(0).expand(batch, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, C, 3PP] -> [B, 3, C, P, P]."""
        batch, channels, _ = tokens.shape
        size = self.plane_size
        return tokens.reshape(batch, channels, 3, size, size).permute(0, 2, 1, 3, 4)


class Attention(nn.Module):
    """Multi-head attention with diffusers' key names (``to_q``, ``to_out.0``)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None) -> None:
        super().__init__()
        inner, context = heads * head_dim, context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context, inner, bias=False)
        self.to_v = nn.Linear(context, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        batch = x.shape[0]
        q, k, v = (
            t.reshape(batch, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        out = nnf.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.to_out[0](out)  # type: ignore[no-any-return]


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * nnf.gelu(gate)  # type: ignore[no-any-return]


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            x = module(x)
        return x


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the image tokens, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads, head_dim, None)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, head_dim, cross_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))  # type: ignore[no-any-return]


class Backbone(nn.Module):
    """The triplane transformer (``backbone``): group norm, in-projection, blocks,
    out-projection, residual."""

    def __init__(self, config: TripoConfig) -> None:
        super().__init__()
        inner = config.heads * config.head_dim
        self.norm = nn.GroupNorm(config.norm_groups, config.plane_channels, eps=1e-6)
        self.proj_in = nn.Linear(config.plane_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, config.heads, config.head_dim, config.cross_dim)
            for _ in range(config.layers)
        )
        self.proj_out = nn.Linear(inner, config.plane_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = self.proj_in(self.norm(tokens).transpose(1, 2))
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        return self.proj_out(hidden).transpose(1, 2) + tokens  # type: ignore[no-any-return]


class Upsampler(nn.Module):
    """Each plane doubled in resolution (``post_processor.upsample``)."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        batch = planes.shape[0]
        up = self.upsample(planes.flatten(0, 1))
        return up.reshape(batch, 3, *up.shape[1:])  # type: ignore[no-any-return]


class Decoder(nn.Module):
    """The NeRF MLP (``decoder.layers``): three concatenated plane features -> density
    and three colour features."""

    def __init__(self, config: TripoConfig) -> None:
        super().__init__()
        act = nn.SiLU if config.activation == "silu" else nn.ReLU
        width = config.mlp_neurons
        layers: list[nn.Module] = [nn.Linear(3 * config.triplane_channels, width), act()]
        for _ in range(config.mlp_hidden_layers - 1):
            layers += [nn.Linear(width, width), act()]
        layers.append(nn.Linear(width, 4))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # type: ignore[no-any-return]


class TripoSR(nn.Module):
    """The whole model; ``scene_codes`` per image, then ``query`` at points."""

    def __init__(self, config: TripoConfig) -> None:
        super().__init__()
        self.config = config
        self.image_tokenizer = ImageTokenizer(config.vit)
        self.tokenizer = TriplaneTokens(config.plane_size, config.plane_channels)
        self.backbone = Backbone(config)
        self.post_processor = Upsampler(config.plane_channels, config.triplane_channels)
        self.decoder = Decoder(config)

    @classmethod
    def load(cls, folder: Path) -> TripoSR:
        """``config.yaml`` and ``model.ckpt`` (a plain state dict, read without
        unpickling code), every key loaded strictly."""
        model = cls(TripoConfig.read(folder))
        state = torch.load(folder / "model.ckpt", map_location="cpu", weights_only=True)
        model.load_state_dict(_renamed(state, set(model.state_dict())), strict=True)
        return model.eval()

    def scene_codes(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] in 0-1 at ``cond_image_size`` -> triplanes [B, 3, C, 2P, 2P]."""
        context = self.image_tokenizer(images)
        tokens = self.backbone(self.tokenizer(images.shape[0]), context)
        return self.post_processor(self.tokenizer.detokenize(tokens))  # type: ignore[no-any-return]

    def query(
        self, triplane: torch.Tensor, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (activated) and colour (0-1) at ``points`` [N, 3] within ±radius, for
        one triplane [3, C, H, W]."""
        config = self.config
        grid = (points / config.radius).to(triplane.dtype)
        pairs = torch.stack((grid[:, [0, 1]], grid[:, [0, 2]], grid[:, [1, 2]]))  # xy xz yz
        sampled = nnf.grid_sample(triplane, pairs.unsqueeze(1), align_corners=False,
                                mode="bilinear")  # [3, C, 1, N]  # fmt: skip
        features = sampled.squeeze(2).permute(2, 0, 1).reshape(points.shape[0], -1)
        out = self.decoder(features).float()
        density = out[:, 0] + config.density_bias
        density = torch.exp(density) if config.density_activation in ("exp", "trunc_exp") \
            else nnf.softplus(density)  # fmt: skip
        return density, torch.sigmoid(out[:, 1:4])


def _renamed(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """The checkpoint's keys as this transformers version names the ViT's modules."""
    return {key if key in wanted else vit_name(key): value for key, value in state.items()}


def vit_name(key: str, newer: bool = True) -> str:
    """An image tokenizer key in transformers 5's names (``newer``) or 4.x's."""
    if not key.startswith("image_tokenizer.model."):
        return key
    for old, new in VIT_NAMES if newer else VIT_NAMES[::-1]:
        key = key.replace(old, new) if newer else key.replace(new, old)
    return key
