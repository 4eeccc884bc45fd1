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

from services.errors import UnknownModel
from services.registry import ModelTask

SourceKind = Literal["url", "package", "local", "hub"]
# how a package's file becomes the stored one (services.models.importers)
Conversion = Literal[
    "copy", "state-dict", "ncnn-esrgan", "ncnn-cunet", "retinaface-onnx", "onnx-graph"
]
Task = ModelTask


class WeightSource(BaseModel):
    """One way to obtain a model's weights, and the sha256 of the file it yields."""

    kind: SourceKind
    filename: str = Field(description="File (or, for repositories, directory) in the store.")
    sha256: str | None = Field(
        default=None, description="Checksum of the stored file; None: not pinned."
    )
    url: str | None = None
    repo: str | None = Field(
        default=None, description="A model hub repository (kind hub): a directory in the store."
    )
    package: str | None = Field(
        default=None, description="Kind package: the registry requirement shipping the weights."
    )
    module: str | None = Field(default=None, description="Kind package: its import name.")
    path: str | None = Field(
        default=None, description="Kind package: the weight file inside the module's folder."
    )
    path_sha256: str | None = Field(default=None, description="Checksum of that file.")
    convert: Conversion = "copy"
    files: list[str] | None = Field(
        default=None,
        description="Kind hub: the files to fetch (default: safetensors, JSON and text).",
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
        "RealCUGAN",
        "CUNet",
        "FFDNet",
        "MobileNetV2",
        "OpenNSFW",
        "TripoSR",
        "DepthAnything",
        "DPT",
        "UperNet",
        "SegFormer",
        "Spandrel",  # an added model of another architecture spandrel loads
    ]
    scale: int = Field(ge=1, le=8)
    license: str
    opt_in: bool = Field(
        default=False,
        description="Imported only when named (a copyleft licence the operator accepts).",
    )
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
