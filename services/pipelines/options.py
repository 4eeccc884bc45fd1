"""Face and generation options from parameters: a request's fields or a preset step's
params, with the models resolved by task and the ranges checked. Shared by the task
specs (tasks.py) and the presets (presets.py), owned by neither."""

from __future__ import annotations

from typing import Any

from services.config import Settings
from services.errors import NotConfigured, UnknownModel
from services.models.diffusion import GenerateOptions
from services.models.manifest import Manifest
from services.pipelines.faces import DEFAULT_MAX_FACES, FaceOptions


def face_options(params: dict[str, Any], manifest: Manifest, settings: Settings) -> FaceOptions:
    """Face options from parameters (a request's form or a step's params), with the
    models resolved by task and the ranges checked."""
    model = manifest.for_task(params.get("model") or settings.default_face_model, "face")
    detector = manifest.for_task(params.get("detector") or settings.default_face_detector,
                                 "detect")  # fmt: skip
    background = manifest.for_task(params.get("background_model") or settings.default_model,
                                   "upscale")  # fmt: skip
    options = FaceOptions(
        model.name, detector.name, float(params.get("weight", 1.0)),
        float(params.get("fidelity", 0.5)), int(params.get("upscale", 1)), background.name,
        background.scale, bool(params.get("only_center_face", False)),
        _max_faces(params.get("max_faces"), settings),
    )  # fmt: skip
    options.check(settings)
    return options


def _max_faces(asked: Any, settings: Settings) -> int:
    """The asked number, or the default capped at the server's limit (an operator who
    lowers ``max_faces`` must not make every request that leaves it out fail)."""
    return min(DEFAULT_MAX_FACES, settings.max_faces) if asked is None else int(asked)


def generate_options(
    params: dict[str, Any], settings: Settings, image_to_image: bool = False
) -> GenerateOptions:
    """SDXL options from parameters, the checkpoint alias known, the ranges checked."""
    alias = str(params.get("checkpoint") or settings.default_checkpoint)
    if not settings.diffusion_checkpoints:
        raise NotConfigured("no SDXL checkpoint is configured: map aliases to models in the "
                            "diffusion_checkpoints setting (e.g. {realism: sdxl-base}) and "
                            "fetch them with `pixserve models pull sdxl-base`")  # fmt: skip
    if alias not in settings.diffusion_checkpoints:
        known = ", ".join(settings.diffusion_checkpoints)
        raise UnknownModel(f"unknown checkpoint '{alias}'; checkpoints: {known}")
    names = ("negative_prompt", "width", "height", "steps", "guidance", "scheduler", "seed",
             "strength")  # fmt: skip
    fields = {name: params[name] for name in names if params.get(name) is not None}
    options = GenerateOptions(str(params.get("prompt") or ""), alias, **fields)
    options.check(settings, image_to_image)
    return options
