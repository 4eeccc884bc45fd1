"""Presets: named pipelines shipped as data (``presets.yaml``), compiled into plans.

A preset is a small DAG of steps; each step has a kind (denoise, upscale, face,
blur_faces, generate, caption, mesh), which names the deployment that runs it, and parameters. A
``Plan`` is a preset checked against the manifest and settings, with every step's
options resolved, so a bad preset, parameter or model is refused (422) before any
work starts. The serving layer runs a plan by chaining the deployments' calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.config import Settings
from services.errors import (
    InvalidParameter,
    NotConfigured,
    ServiceUnavailable,
    UnknownModel,
)
from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertFormat, ConvertOptions, ResizeMode
from services.jsontext import parse_object
from services.models.diffusion import GenerateOptions
from services.models.manifest import Manifest
from services.models.mesh_io import MeshOptions, MeshOutput
from services.pipelines.faces import DetectOptions, FaceOptions
from services.pipelines.mesh import mesh_options
from services.pipelines.options import face_options, generate_options
from services.pipelines.upscale import UpscaleOptions
from services.registry import DEPLOYMENT_OF_STEP, StepKind

IMAGE_STEPS = {"denoise", "upscale", "face", "blur_faces", "generate"}
MESH_STEPS = {"mesh"}  # a preset's last step, whose mesh is its output; the others: text
SOURCE = "source"  # the uploaded image, as a step's input
_STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_PARAMS: dict[str, set[str]] = {
    "denoise": {"model"},
    "upscale": {"model", "scale", "width", "height"},
    "face": {
        "model",
        "detector",
        "weight",
        "fidelity",
        "upscale",
        "background_model",
        "only_center_face",
        "max_faces",
    },
    "blur_faces": {"detector", "min_score", "method"},
    "caption": {"want"},
    "mesh": {
        "engine",
        "model",
        "resolution",
        "max_faces",
        "format",
        "remove_background",
        "relief_depth",
    },
    "generate": {
        "prompt",
        "negative_prompt",
        "checkpoint",
        "steps",
        "guidance",
        "scheduler",
        "seed",
        "strength",
    },
}

PARAMS_EXAMPLE = '{"upscale": {"scale": 4}}'


class Step(BaseModel):
    """One step as declared: its id, kind, parameters and the step it takes its image
    from (None: the previous image step, or the uploaded image for the first)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: StepKind
    params: dict[str, Any] = Field(default_factory=dict)
    input: str | None = None


class OutputSpec(BaseModel):
    """The final encoding, done by the Codec (see ``POST /v1/convert`` for the fields)."""

    model_config = ConfigDict(extra="forbid")

    format: ConvertFormat = "png"
    quality: int = Field(default=90, ge=1, le=100)
    resize: ResizeMode | None = None
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    max_bytes: int | None = None
    enlarge: bool = True

    def options(self) -> ConvertOptions:
        return ConvertOptions(**self.model_dump())


class Preset(BaseModel):
    """A named pipeline; ``output`` None means it returns text only (a caption)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    steps: list[Step]
    output: OutputSpec | None = None

    @model_validator(mode="after")
    def _wired(self) -> Preset:
        """Ids unique and well formed; inputs name an earlier image step."""
        seen: set[str] = {SOURCE}
        for step in self.steps:
            if not _STEP_ID.match(step.id) or step.id in seen:
                raise ValueError(f"step id '{step.id}' is malformed or used twice")
            if step.input is not None and step.input not in seen:
                raise ValueError(f"step '{step.id}' takes '{step.input}', not an earlier step")
            if step.kind in IMAGE_STEPS:
                seen.add(step.id)
        meshes = [i for i, step in enumerate(self.steps) if step.kind in MESH_STEPS]
        if meshes and (meshes != [len(self.steps) - 1] or self.output is not None):
            raise ValueError("a mesh step comes last, once, and is the output (no encoding)")
        if not meshes and self.output is None and any(s.kind in IMAGE_STEPS for s in self.steps):
            raise ValueError("a preset with image steps needs an output encoding")
        return self

    def deployments(self) -> list[str]:
        return sorted({DEPLOYMENT_OF_STEP[step.kind] for step in self.steps})


@dataclass(frozen=True)
class TileStep:
    """A denoise or upscale step's options, with the model's native scale."""

    options: UpscaleOptions
    native_scale: int


@dataclass(frozen=True)
class PlannedStep:
    """A step ready to run: the deployment, resolved options, and its input's id."""

    id: str
    kind: str
    deployment: str
    options: TileStep | FaceOptions | DetectOptions | GenerateOptions | MeshOptions | dict[str, Any]
    input: str


@dataclass(frozen=True)
class Plan:
    """A preset resolved for one request: steps in order, the image the output
    encodes (``result``: a step id or ``source``) and the encoding."""

    preset: str
    steps: list[PlannedStep]
    result: str
    output: ConvertOptions | None

    @property
    def models(self) -> list[str]:
        names = []
        for step in self.steps:
            options = step.options
            if isinstance(options, TileStep):
                names.append(options.options.model)
            elif isinstance(options, FaceOptions | DetectOptions | MeshOptions):
                names += options.models
        return names

    @property
    def mesh(self) -> MeshOptions | None:
        """The last step's options when it makes a mesh (the preset's output)."""
        last = self.steps[-1].options if self.steps else None
        return last if isinstance(last, MeshOptions) else None

    @property
    def output_format(self) -> str:
        """The stored output's format: the mesh's, the encoding's, else ``json``."""
        if self.mesh is not None:
            return self.mesh.format
        return self.output.format if self.output is not None else "json"


@dataclass(frozen=True)
class PlanResult:
    """What a plan produced: the encoded image (None for text-only and mesh presets),
    each text step's output by step id, and the mesh of a mesh preset."""

    image: Converted | None
    texts: dict[str, dict[str, Any]] = field(default_factory=dict)
    mesh: MeshOutput | None = None


class PlanBackend(Protocol):
    """Runs a plan: the Serve backend chains the deployments' handles."""

    def serves(self) -> set[str]:
        """The deployments that run pipeline steps (presets needing others are off)."""
        ...

    async def run_plan(self, image: DecodedImage, plan: Plan) -> PlanResult: ...


class PresetLibrary:
    """The shipped presets (plus any from an extra file), by name."""

    def __init__(self, presets: dict[str, Preset], available: set[str]) -> None:
        self.presets = presets
        self.available = available  # deployments the graph runs

    def get(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise UnknownModel(f"unknown preset '{name}'; presets: {known}") from None

    def missing(self, preset: Preset) -> list[str]:
        """The deployments ``preset`` needs that this platform does not run."""
        return [name for name in preset.deployments() if name not in self.available]

    def compile(
        self,
        name: str,
        manifest: Manifest,
        settings: Settings,
        overrides: dict[str, dict[str, Any]] | None = None,
        output: dict[str, Any] | None = None,
    ) -> Plan:
        """``name`` resolved into a plan; ``overrides`` change step parameters by step
        id, ``output`` the encoding. Raises a named 422 (or 503: a deployment the preset
        needs is not running) before any work starts."""
        preset = self.get(name)
        if absent := self.missing(preset):
            raise ServiceUnavailable(
                f"preset '{name}' needs the {', '.join(absent)} deployment(s), which this "
                "platform does not run"
            )
        overrides = overrides or {}
        if unknown := set(overrides) - {step.id for step in preset.steps}:
            raise InvalidParameter(f"preset '{name}' has no step {sorted(unknown)}; its steps: "
                                   f"{[step.id for step in preset.steps]}")  # fmt: skip
        steps, previous = [], SOURCE
        for step in preset.steps:
            params = {**step.params, **overrides.get(step.id, {})}
            options = _resolve(step, params, manifest, settings)
            source = step.input or previous
            steps.append(PlannedStep(step.id, step.kind, DEPLOYMENT_OF_STEP[step.kind],
                                     options, source))  # fmt: skip
            if step.kind in IMAGE_STEPS:
                previous = step.id
        return Plan(name, steps, previous, _output(preset, output))


def load_presets(available: set[str], extra: Path | None = None) -> PresetLibrary:
    """The packaged presets, with ``extra``'s (a YAML file of the same shape) over them."""
    text = resources.files("services.pipelines").joinpath("presets.yaml").read_text()
    presets = _parse(text)
    if extra is not None:
        presets.update(_parse(extra.read_text()))
    return PresetLibrary(presets, available)


def step_overrides(params: str | None) -> dict[str, dict[str, Any]]:
    """A request's ``params`` field: JSON mapping step ids to parameter objects."""
    if not params:
        return {}
    parsed = parse_object("params", params, PARAMS_EXAMPLE)
    if not all(isinstance(v, dict) for v in parsed.values()):
        raise InvalidParameter(f"params must map step ids to objects: {PARAMS_EXAMPLE}")
    return parsed


def _preset_generate(step: Step, params: dict[str, Any], settings: Settings) -> GenerateOptions:
    """A preset's diffusion step; its checkpoint not configured is the platform's gap
    (501), not the caller's mistake."""
    try:
        return generate_options(params, settings, image_to_image=True)
    except UnknownModel as exc:
        raise NotConfigured(f"step '{step.id}': {exc.message}; map the alias to an SDXL "
                            "model in the diffusion_checkpoints setting and fetch it with "
                            "`pixserve models pull MODEL`") from None  # fmt: skip


def _resolve(  # noqa: PLR0911 - one return per step kind
    step: Step, params: dict[str, Any], manifest: Manifest, settings: Settings
) -> TileStep | FaceOptions | DetectOptions | GenerateOptions | MeshOptions | dict[str, Any]:
    allowed = _PARAMS.get(step.kind)
    if allowed is not None and (unknown := set(params) - allowed):
        raise InvalidParameter(f"step '{step.id}' ({step.kind}) has no parameter "
                               f"{sorted(unknown)}; it takes {sorted(allowed)}")  # fmt: skip
    try:
        if step.kind == "face":
            return face_options(params, manifest, settings)
        if step.kind == "blur_faces":
            return _blur_options(step, params, manifest, settings)
        if step.kind == "generate":
            return _preset_generate(step, params, settings)
        if step.kind == "mesh":
            return mesh_options(params, manifest, settings)
        if step.kind in ("denoise", "upscale"):
            default = settings.default_model if step.kind == "upscale" else (
                settings.default_denoise_model)  # fmt: skip
            spec = manifest.for_task(params.get("model") or default, step.kind)
            size = _integer(params, "width"), _integer(params, "height")
            return TileStep(UpscaleOptions(spec.name, _number(params, "scale"), *size), spec.scale)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"step '{step.id}': {exc}") from exc
    if step.kind == "caption":
        want = params.get("want", ["caption", "tags", "nsfw"])
        if not isinstance(want, list) or set(want) - {"caption", "tags", "nsfw"}:
            raise InvalidParameter(f"step '{step.id}': want is a list of caption, tags, nsfw")
        return {"want": want}
    return dict(params)


def _blur_options(
    step: Step, params: dict[str, Any], manifest: Manifest, settings: Settings
) -> DetectOptions:
    detector = manifest.for_task(params.get("detector") or settings.default_face_detector,
                                 "detect")  # fmt: skip
    method, score = params.get("method", "blur"), float(params.get("min_score", 0.0))
    if method not in ("blur", "pixelate"):
        raise InvalidParameter(f"step '{step.id}': method is blur or pixelate, not {method!r}")
    if not 0.0 <= score <= 1.0:
        raise InvalidParameter(f"step '{step.id}': min_score must be within 0 and 1")
    return DetectOptions(detector.name, score, method)


def _output(preset: Preset, override: dict[str, Any] | None) -> ConvertOptions | None:
    if preset.output is None:
        if override:
            makes = "a mesh (its step's format param)" if any(
                step.kind in MESH_STEPS for step in preset.steps) else "text"  # fmt: skip
            raise InvalidParameter(f"preset '{preset.name}' returns {makes}; it has no image "
                                   "output")  # fmt: skip
        return None
    try:
        return OutputSpec.model_validate(
            {**preset.output.model_dump(), **(override or {})}
        ).options()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidParameter(f"output: {problems}") from None


def _number(params: dict[str, Any], name: str) -> float | None:
    return None if params.get(name) is None else float(params[name])


def _integer(params: dict[str, Any], name: str) -> int | None:
    return None if params.get(name) is None else int(params[name])


def _parse(text: str) -> dict[str, Preset]:
    raw = yaml.safe_load(text)
    presets = [Preset.model_validate(entry) for entry in raw["presets"]]
    return {preset.name: preset for preset in presets}
