"""Image-to-3D requests: the options a mesh is made with (services/models/mesh_io.py),
checked once for a sync call, a job and a preset step."""

from __future__ import annotations

from typing import Any, get_args

from services.config import Settings
from services.errors import InvalidParameter, NotConfigured, UnknownModel
from services.imaging.meshes import MeshFormat
from services.models.manifest import Manifest
from services.models.mesh_io import DEFAULT_RELIEF_DEPTH, MeshEngineName, MeshOptions

DEFAULT_RESOLUTION = 256
MIN_RESOLUTION, MIN_FACES = 16, 100
RELIEF_DEPTH = (0.01, 2.0)  # a relief's height as a share of its width: allowed range
# engine -> the model task it runs and the setting naming its model
ENGINE_MODELS: dict[str, tuple[str, str]] = {
    "relief": ("depth", "depth_model"), "triposr": ("mesh", "mesh_model"),
}  # fmt: skip


def mesh_options(params: dict[str, Any], manifest: Manifest, settings: Settings) -> MeshOptions:
    """Mesh options from a request's fields or a preset step's params: the engine's
    model configured here, the grid and face budget within the settings' caps."""
    engine = params.get("engine") or "relief"
    if engine not in get_args(MeshEngineName):
        raise InvalidParameter(f"engine: {engine!r} is not relief or triposr", param="engine")
    fmt = params.get("format") or "glb"
    if fmt not in get_args(MeshFormat):
        raise InvalidParameter(f"format: {fmt!r} is not glb, obj or ply", param="format")
    cap = settings.mesh_max_resolution
    resolution = _ranged(params, "resolution", min(DEFAULT_RESOLUTION, cap), MIN_RESOLUTION, cap)
    faces = _ranged(params, "max_faces", settings.mesh_max_faces, MIN_FACES,
                    settings.mesh_max_faces)  # fmt: skip
    depth = float(params.get("relief_depth", DEFAULT_RELIEF_DEPTH))
    if not RELIEF_DEPTH[0] <= depth <= RELIEF_DEPTH[1]:
        raise InvalidParameter(f"relief_depth: {depth:g} is out of range; allowed "
                               f"{RELIEF_DEPTH[0]:g} to {RELIEF_DEPTH[1]:g}",
                               param="relief_depth")  # fmt: skip
    model = _engine_model(engine, params.get("model"), manifest, settings)
    return MeshOptions(engine, model, resolution, faces, fmt,  # type: ignore[arg-type]
                       bool(params.get("remove_background", True)), depth,
                       bool(params.get("preview", True)))  # fmt: skip


def _engine_model(engine: str, asked: Any, manifest: Manifest, settings: Settings) -> str:
    """The engine's model: the one asked for or the configured one, if served here."""
    task, setting = ENGINE_MODELS[engine]
    configured = getattr(settings, setting)
    if configured is None:
        raise NotConfigured(f"engine {engine} needs a {task} model: set {setting} and fetch "
                            "it with `pixserve models pull NAME`")  # fmt: skip
    name = str(asked or configured)
    try:
        spec = manifest.for_task(name, task)  # type: ignore[arg-type]
    except UnknownModel as exc:
        raise UnknownModel(exc.message, param="model") from None
    if spec.name != configured:
        raise UnknownModel(f"model: '{name}' is not served here; engine {engine} uses "
                           f"'{configured}'", param="model")  # fmt: skip
    return spec.name


def _ranged(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    number = default if value is None else int(value)
    if not low <= number <= high:
        raise InvalidParameter(f"{name}: {number} is out of range; allowed {low} to {high}",
                               param=name)  # fmt: skip
    return number
