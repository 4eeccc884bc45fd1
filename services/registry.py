"""The deployment registry: every Serve deployment of the platform, written once.

For each deployment: its name, the model tasks it serves (manifest ``task``; the
settings listing their models follow, ``MODEL_SETTINGS``), the preset step kinds it
runs, which model tasks make it worth a replica, and what to set when nothing is
configured for it. The graph builder, the
API backend, readiness, ``/v1/models``, ``/v1/presets`` and the Helm helper's mirror
all read this table; adding a model family is one entry here, an engine and a thin
deployment (docs/architecture.md, "Adding a model family").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.config import MODEL_SETTINGS, Settings

ModelTask = Literal[
    "upscale", "denoise", "face", "detect", "generate", "safety", "caption", "tags", "nsfw", "vqa",
    "mesh", "depth", "segment",
]  # fmt: skip
StepKind = Literal["denoise", "upscale", "face", "blur_faces", "generate", "caption", "mesh"]
# the tasks a request (sync or a job) names; services/pipelines/tasks.py has their specs
TASKS = ("upscale", "denoise", "restore_face", "detect_faces", "generate", "caption", "convert",
         "mesh", "preset")  # fmt: skip


@dataclass(frozen=True)
class DeploymentEntry:
    """One deployment: what it serves, and when it runs at all."""

    name: str
    model_tasks: tuple[ModelTask, ...] = ()
    step_kinds: tuple[StepKind, ...] = ()
    serving_tasks: tuple[ModelTask, ...] = ()  # tasks whose models give it a replica
    always: bool = False  # runs whatever is configured (the Upscaler, the Codec)
    hint: str = "configure its models"
    # its replicas take the operator's load and unload commands (the Diffusion
    # deployment's checkpoints load on demand through Serve's model multiplexing)
    model_control: bool = True

    @property
    def settings(self) -> tuple[str, ...]:
        """The settings that list its models, one per model task."""
        return tuple(MODEL_SETTINGS[task] for task in self.model_tasks)

    @property
    def is_model(self) -> bool:
        """A model deployment: it loads weights and reports their status."""
        return bool(self.model_tasks)


REGISTRY: tuple[DeploymentEntry, ...] = (
    DeploymentEntry("Upscaler", ("upscale",), ("upscale",), ("upscale",), always=True),
    DeploymentEntry(
        "Denoiser",
        ("denoise",),
        ("denoise",),
        ("denoise",),
        hint="set denoise_models (e.g. [{denoise}])",
    ),
    DeploymentEntry(
        "FaceRestorer",
        ("face", "detect"),
        ("face", "blur_faces"),
        ("face", "detect"),  # a detector alone serves detection and blur-faces
        hint="set face_models and face_detectors (e.g. [{face}] and [{detector}])",
    ),
    DeploymentEntry(
        "Diffusion",
        ("generate", "safety"),
        ("generate",),
        ("generate",),
        hint="map diffusion_checkpoints (e.g. {{realism: sdxl-base}})",
        model_control=False,
    ),
    DeploymentEntry(
        "Vision",
        ("caption", "tags", "nsfw", "vqa"),
        ("caption",),
        ("caption", "tags", "nsfw", "vqa"),
        hint="set caption_model, tag_model, nsfw_model or vqa_model (e.g. blip-caption)",
    ),
    DeploymentEntry(
        "Mesher",
        ("mesh", "depth", "segment"),
        ("mesh",),
        ("mesh", "depth"),  # a segmenter alone makes no mesh
        hint="set depth_model (engine relief, e.g. depth-anything-v2-small) or mesh_model "
        "(engine triposr)",
    ),
    DeploymentEntry("Codec", always=True),
)
ENTRIES = {entry.name: entry for entry in REGISTRY}
MODEL_DEPLOYMENTS = tuple(entry.name for entry in REGISTRY if entry.is_model)
CONTROLLED_DEPLOYMENTS = tuple(name for name in MODEL_DEPLOYMENTS if ENTRIES[name].model_control)
# the tile models again on CPU, for a request the GPU had no memory for: a deployment
# of its own (Serve gives every replica of one deployment the same resources), bound
# only when its setting is on
TILE_FALLBACK = "TileFallback"
FALLBACKS = {TILE_FALLBACK: "cpu_fallback"}  # deployment -> the setting that starts it
OPTIONAL_DEPLOYMENTS = MODEL_DEPLOYMENTS + tuple(FALLBACKS)
DEPLOYMENT_OF_TASK: dict[str, str] = {
    task: entry.name for entry in REGISTRY for task in entry.model_tasks
}
DEPLOYMENT_OF_STEP: dict[str, str] = {
    kind: entry.name for entry in REGISTRY for kind in entry.step_kinds
}


def deployments_in_use(settings: Settings) -> set[str]:
    """The model deployments these settings give something to serve (and those that
    always run), and the fallbacks they turn on; the others are left out of the
    application and take no replica."""
    fallbacks = {name for name, setting in FALLBACKS.items() if getattr(settings, setting)}
    return fallbacks | {
        entry.name
        for entry in REGISTRY
        if entry.is_model
        and (entry.always or any(settings.configured(task) for task in entry.serving_tasks))
    }


def not_configured_reason(deployment: str, settings: Settings) -> str:
    """Why ``deployment`` has no replica, and which settings would give it one."""
    hint = ENTRIES[deployment].hint.format(
        denoise=settings.default_denoise_model,
        face=settings.default_face_model,
        detector=settings.default_face_detector,
    )
    return (
        f"nothing is configured for the {deployment} deployment, so it runs no replica: "
        f"{hint}, then fetch the weights with `pixserve models pull NAME`"
    )
