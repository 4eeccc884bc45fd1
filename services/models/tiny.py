"""Tiny random-weight Real-ESRGAN models, saved in the real formats, with a manifest.

They run the real loading path (spandrel, checksum, manifest) in milliseconds: the
tests use them, and so does the CPU benchmark where the full models would take hours.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from spandrel.architectures.Compact import Compact as SRVGGNetCompact
from spandrel.architectures.DnCNN import DnCNN
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SCUNet import SCUNet

from services.models.store import sha256_file

TINY_RRDB = "tiny-x4"
TINY_COMPACT = "tiny-compact-x2"
TINY_X2_UNSHUFFLE = "tiny-x2-unshuffle"
TINY_SCUNET = "tiny-scunet"
TINY_DNCNN = "tiny-dncnn"


def _rrdb() -> torch.nn.Module:
    module: torch.nn.Module = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    return module


def _x2_unshuffle() -> torch.nn.Module:
    """RealESRGAN_x2plus's shape: pixel-unshuffle by 2 (12 input channels), then x4."""
    module: torch.nn.Module = ESRGAN(
        in_nc=12, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2
    )
    return module


def _compact() -> torch.nn.Module:
    module: torch.nn.Module = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2)
    return module


def _scunet() -> torch.nn.Module:
    """SCUNet's real layout (Swin-conv blocks, three downsamplings) with one block per
    stage and the narrowest width its 32-channel attention heads allow (64)."""
    module: torch.nn.Module = SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64)
    return module


def _dncnn() -> torch.nn.Module:
    module: torch.nn.Module = DnCNN(in_nc=3, out_nc=3, nc=8, nb=4, act_mode="BR")
    return module


def build_tiny_store(root: Path) -> Path:
    """Write the tiny models into ``root`` and return the path of their manifest."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    entries = []
    for name, arch, scale, build in (
        (TINY_RRDB, "RRDBNet", 4, _rrdb),
        (TINY_COMPACT, "SRVGGNetCompact", 2, _compact),
        (TINY_X2_UNSHUFFLE, "RRDBNet", 2, _x2_unshuffle),
        (TINY_SCUNET, "SCUNet", 1, _scunet),
        (TINY_DNCNN, "DnCNN", 1, _dncnn),
    ):
        filename = f"{name}.pth"
        torch.save(build().state_dict(), root / filename)
        entries.append(
            {
                "name": name,
                "task": "denoise" if scale == 1 else "upscale",
                "architecture": arch,
                "scale": scale,
                "license": "test-only",
                "description": "random weights for tests",
                "sources": [
                    {"kind": "local", "filename": filename, "sha256": sha256_file(root / filename)}
                ],
            }
        )
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"models": entries}, indent=2))
    return manifest
