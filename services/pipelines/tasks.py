"""Task specs: one typed request per task, the same for a sync call and a job.

A spec is what a client asks (``task`` discriminates: upscale, denoise, restore_face,
detect_faces, generate, caption, convert, mesh, preset), parsed once from a form or a
stored job with ``parse_task``. ``plan_task`` checks it against the manifest and the settings and
resolves it into the options the deployments take: everything that can be refused
without the image (ranges, NaN, unknown or unconfigured models, format limits, the
output size when it is given) is refused there, with a 422 naming the field, before
any work is queued. Jobs store ``spec.model_dump()`` and read it back with
``parse_task``.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.config import Settings
from services.errors import ImageTooLarge, InvalidParameter, UnknownModel
from services.imaging.codec import MAX_SIDES
from services.imaging.convert import ConvertFormat, ConvertOptions, ResizeMode
from services.imaging.meshes import MeshFormat
from services.jsontext import parse_object
from services.models.diffusion import GenerateOptions
from services.models.manifest import Manifest, ModelSpec
from services.models.mesh_io import DEFAULT_RELIEF_DEPTH, MeshEngineName, MeshOptions
from services.models.tile_io import DEFAULT_NOISE_LEVEL, MAX_NOISE_LEVEL
from services.pipelines.budget import (
    NO_BUDGET,
    Budget,
    generation_budget,
    image_to_image_budget,
    mesh_cost,
    tile_budget,
)
from services.pipelines.faces import DetectOptions, FaceOptions
from services.pipelines.mesh import MIN_FACES, MIN_RESOLUTION, RELIEF_DEPTH, mesh_options
from services.pipelines.options import face_options, generate_options
from services.pipelines.presets import PARAMS_EXAMPLE, Plan, PresetLibrary
from services.pipelines.upscale import UpscaleOptions
from services.registry import TASKS, ModelTask

ImageFormat = Literal["png", "jpeg", "webp"]
Want = Literal["caption", "tags", "nsfw"]
ALL_OUTPUTS: list[Want] = ["caption", "tags", "nsfw"]


class _Spec(BaseModel):
    """Every spec: unknown fields and NaN/inf are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Encoded(_Spec):
    format: ImageFormat = Field(default="png", description="png, jpeg or webp.")
    quality: int = Field(default=90, ge=1, le=100, description="JPEG/WEBP quality.")


class _Kept(_Encoded):
    """A task on an input image, whose metadata the output may keep."""

    keep_metadata: bool = Field(
        default=False, description="Keep EXIF (upright, resized), ICC and XMP of the input."
    )


class UpscaleTask(_Kept):
    task: Literal["upscale"] = "upscale"
    model: str | None = Field(default=None, description="Model name; see GET /v1/models.")
    scale: float | None = Field(default=None, gt=0, description="Output scale, e.g. 2.5.")
    width: int | None = Field(default=None, ge=1, description="Target width in px.")
    height: int | None = Field(default=None, ge=1, description="Target height in px.")


class DenoiseTask(_Kept):
    task: Literal["denoise"] = "denoise"
    model: str | None = None
    noise_level: float | None = Field(
        default=None, ge=0, le=MAX_NOISE_LEVEL,
        description="FFDNet only: the noise's sigma on the 0-255 scale (default 25).",
    )  # fmt: skip


class DetectFacesTask(_Spec):
    task: Literal["detect_faces"] = "detect_faces"
    detector: str | None = None
    min_score: float = Field(default=0.0, ge=0, le=1, description="Leave out faces under it.")


class RestoreFaceTask(_Kept):
    task: Literal["restore_face"] = "restore_face"
    model: str | None = None
    detector: str | None = None
    weight: float = Field(default=1.0, ge=0, le=1)
    fidelity: float = Field(default=0.5, ge=0, le=1)
    upscale: int = Field(default=1, ge=1, le=4)
    background_model: str | None = None
    only_center_face: bool = False
    max_faces: int | None = Field(default=None, ge=1)  # None: DEFAULT_MAX_FACES, capped


class GenerateTask(_Encoded):
    """One image per prompt: ``prompt`` (``count`` times) or ``prompts``; a job records
    each item's seed in ``seeds`` at submit."""

    task: Literal["generate"] = "generate"
    prompt: str | None = None
    prompts: list[str] | None = Field(default=None, min_length=1)
    count: int = Field(default=1, ge=1)
    negative_prompt: str = ""
    checkpoint: str | None = None
    width: int = 1024
    height: int = 1024
    steps: int = 30
    guidance: float = 5.0
    scheduler: str = "euler"
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    seeds: list[int] | None = None
    strength: float = 0.6

    def prompt_list(self) -> list[str]:
        if self.prompts is not None:
            return self.prompts
        return [self.prompt or ""] * self.count

    def for_item(self, index: int) -> GenerateTask:
        """The one-image spec of a job's item ``index``, with its recorded seed."""
        seed = self.seeds[index] if self.seeds else self.seed
        return self.model_copy(
            update={
                "prompt": self.prompt_list()[index],
                "prompts": None,
                "count": 1,
                "seed": seed,
                "seeds": None,
            }
        )


class CaptionTask(_Spec):
    task: Literal["caption"] = "caption"
    outputs: list[Want] = Field(default_factory=lambda: list(ALL_OUTPUTS), min_length=1)


class ConvertTask(_Spec):
    task: Literal["convert"] = "convert"
    format: ConvertFormat = "webp"
    quality: int = Field(default=85, ge=1, le=100)
    resize: ResizeMode | None = None
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    scale: float | None = Field(default=None, gt=0, le=8)
    keep_metadata: bool = False
    max_bytes: int | None = Field(default=None, ge=1)
    enlarge: bool = True


class MeshTask(_Spec):
    task: Literal["mesh"] = "mesh"
    engine: MeshEngineName = Field(
        default="relief", description="relief (depth, fast) or triposr (a whole object)."
    )
    model: str | None = Field(default=None, description="The engine's model; default its setting.")
    resolution: int | None = Field(
        default=None, ge=MIN_RESOLUTION,
        description="Marching-cubes grid edge (triposr) or relief grid's longer side; "
        "default 256, at most the server's mesh_max_resolution.",
    )  # fmt: skip
    max_faces: int | None = Field(
        default=None, ge=MIN_FACES, description="Face budget; default the server's mesh_max_faces."
    )
    format: MeshFormat = Field(default="glb", description="glb, obj (zipped with MTL, PNG) or ply.")
    remove_background: bool = Field(
        default=True, description="Cut the object out (alpha, segmentation or depth) first."
    )
    relief_depth: float = Field(
        default=DEFAULT_RELIEF_DEPTH, ge=RELIEF_DEPTH[0], le=RELIEF_DEPTH[1],
        description="relief: the height of the nearest point, as a share of the width.",
    )  # fmt: skip
    preview: bool = Field(
        default=True, description="Render a PNG preview, stored beside a job's mesh."
    )


class PresetTask(_Spec):
    task: Literal["preset"] = "preset"
    preset: str
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    format: ConvertFormat | None = None
    quality: int | None = Field(default=None, ge=1, le=100)
    keep_metadata: bool = False


TaskSpec = Annotated[
    UpscaleTask
    | DenoiseTask
    | RestoreFaceTask
    | DetectFacesTask
    | GenerateTask
    | CaptionTask
    | ConvertTask
    | MeshTask
    | PresetTask,
    Field(discriminator="task"),
]
_ADAPTER: TypeAdapter[TaskSpec] = TypeAdapter(TaskSpec)
_JSON_FIELDS = {"params"}  # sent as JSON text in a form
_LIST_FIELDS = {"outputs", "prompts"}  # repeated form fields


def parse_task(raw: dict[str, Any]) -> TaskSpec:
    """A spec from a form's fields or a stored job; a 422 names every bad field."""
    try:
        return _ADAPTER.validate_python(_legacy(raw))
    except ValidationError as exc:
        problems = _problems(exc)
        raise InvalidParameter("; ".join(problems.values()), param=next(iter(problems))) from None


def form_fields(task: str, fields: dict[str, list[str]]) -> dict[str, Any]:
    """A multipart form's spec fields as ``parse_task`` takes them: repeated fields as
    lists, ``params`` parsed from JSON, a single value otherwise."""
    raw: dict[str, Any] = {"task": task}
    for name, values in fields.items():
        if name in _LIST_FIELDS:
            raw[name] = values
        elif len(values) > 1:
            raise InvalidParameter(f"{name}: given {len(values)} times; send it once")
        elif name in _JSON_FIELDS:
            raw[name] = parse_object(name, values[0], PARAMS_EXAMPLE)
        else:
            raw[name] = values[0]
    return raw


@dataclass(frozen=True)
class TaskPlan:
    """A spec checked and resolved: what the use case sends to the deployments."""

    spec: TaskSpec
    options: (
        UpscaleOptions | FaceOptions | DetectOptions | GenerateOptions | ConvertOptions
        | MeshOptions | Plan | None
    )  # fmt: skip
    native_scale: int = 1  # upscale/denoise: the model's own scale
    budget: Budget = NO_BUDGET  # its compute cost, checked once the input's size is known

    @property
    def models(self) -> list[str]:
        """The manifest models this plan loads (a checkpoint alias is not one)."""
        options = self.options
        if isinstance(options, UpscaleOptions):
            return [options.model]
        if isinstance(options, FaceOptions | DetectOptions | MeshOptions | Plan):
            return options.models
        return []

    @property
    def output_format(self) -> str:
        """The stored output's format (``json`` for text results)."""
        if isinstance(self.options, Plan):
            return self.options.output_format
        if isinstance(self.spec, CaptionTask | DetectFacesTask):
            return "json"
        return str(self.spec.format)


@dataclass(frozen=True)
class TaskContext:
    """What a spec is checked against."""

    manifest: Manifest
    settings: Settings
    presets: PresetLibrary


def plan_task(spec: TaskSpec, context: TaskContext, image_to_image: bool = False) -> TaskPlan:
    """Check ``spec`` and resolve it; the same call for a sync request and a job."""
    plan = _plan(spec, context, image_to_image)
    return dataclasses.replace(plan, budget=_budget(plan, context, image_to_image))


def _budget(plan: TaskPlan, context: TaskContext, image_to_image: bool) -> Budget:
    """The plan's compute budget; a text-to-image generation's whole cost is known now
    and refused now (a job is refused at submit)."""
    limit = context.settings.max_request_cost
    options = plan.options
    if isinstance(options, GenerateOptions) and image_to_image:
        return image_to_image_budget(int(options.steps * options.strength), limit)
    if isinstance(options, GenerateOptions):
        budget = generation_budget(options.width, options.height, options.steps, limit)
        budget.check()
        return budget
    budget = tile_budget([context.manifest.get(name) for name in plan.models], limit)
    mesh = options.mesh if isinstance(options, Plan) else options
    if not isinstance(mesh, MeshOptions):
        return budget
    # a mesh's cost is fixed: the input is resized to the model's own size
    return dataclasses.replace(budget, fixed=mesh_cost(mesh.engine, mesh.resolution))


def _plan(  # noqa: PLR0911 - one return per kind of task
    spec: TaskSpec, context: TaskContext, image_to_image: bool
) -> TaskPlan:
    manifest, settings = context.manifest, context.settings
    if isinstance(spec, UpscaleTask | DenoiseTask):
        return _plan_tiles(spec, manifest, settings)
    if isinstance(spec, RestoreFaceTask | DetectFacesTask):
        return _plan_faces(spec, manifest, settings)
    if isinstance(spec, GenerateTask):
        return _plan_generate(spec, settings, image_to_image)
    if isinstance(spec, MeshTask):
        params = spec.model_dump(exclude={"task"})
        return TaskPlan(spec, mesh_options(params, manifest, settings))
    if isinstance(spec, ConvertTask):
        _check_format_size(spec.format, (spec.width, spec.height))
        return TaskPlan(spec, ConvertOptions(**spec.model_dump(exclude={"task"})))
    if isinstance(spec, PresetTask):
        output = {k: v for k, v in (("format", spec.format), ("quality", spec.quality)) if v}
        plan = context.presets.compile(spec.preset, manifest, settings, spec.params, output or None)
        return TaskPlan(spec, plan)
    return TaskPlan(spec, None)  # caption: its outputs are checked by the spec


def _plan_faces(
    spec: RestoreFaceTask | DetectFacesTask, manifest: Manifest, settings: Settings
) -> TaskPlan:
    if isinstance(spec, RestoreFaceTask):
        params = spec.model_dump(exclude={"task", "format", "quality"})
        return TaskPlan(spec, face_options(params, manifest, settings))
    name = spec.detector or settings.default_face_detector
    try:
        detector = configured_model(manifest, settings, name, "detect")
    except UnknownModel as exc:
        raise UnknownModel(exc.message, param="detector") from None
    return TaskPlan(spec, DetectOptions(detector.name, spec.min_score))


def _plan_tiles(
    spec: UpscaleTask | DenoiseTask, manifest: Manifest, settings: Settings
) -> TaskPlan:
    task: ModelTask = "upscale" if isinstance(spec, UpscaleTask) else "denoise"
    default = settings.default_model if task == "upscale" else settings.default_denoise_model
    model = configured_model(manifest, settings, spec.model or default, task)
    if isinstance(spec, DenoiseTask):
        if spec.noise_level is not None and model.architecture != "FFDNet":
            raise InvalidParameter(
                f"noise_level: {model.name} estimates the noise itself; noise_level is "
                "for FFDNet models", param="noise_level",
            )  # fmt: skip
        noise = spec.noise_level
        if noise is None and model.architecture == "FFDNet":
            noise = DEFAULT_NOISE_LEVEL
        options = UpscaleOptions(model.name, None, None, None, spec.format, spec.quality, noise)
        return TaskPlan(spec, options, model.scale)
    if spec.scale is not None and (spec.width or spec.height):
        raise InvalidParameter("scale: give either scale or width/height, not both",
                               param="scale")  # fmt: skip
    if spec.scale is not None and not 1.0 <= spec.scale <= settings.max_scale:
        raise InvalidParameter(
            f"scale: {spec.scale:g} is out of range; allowed 1 to {settings.max_scale:g}",
            param="scale",
        )
    if spec.width and spec.height and spec.width * spec.height > settings.max_output_pixels:
        raise ImageTooLarge(
            f"width x height: {spec.width}x{spec.height} is over the limit of "
            f"{settings.max_output_pixels} pixels", param="width",
        )  # fmt: skip
    _check_format_size(spec.format, (spec.width, spec.height))
    options = UpscaleOptions(
        model.name, spec.scale, spec.width, spec.height, spec.format, spec.quality
    )
    return TaskPlan(spec, options, model.scale)


def _plan_generate(spec: GenerateTask, settings: Settings, image_to_image: bool) -> TaskPlan:
    if spec.prompts is not None and spec.prompt is not None:
        raise InvalidParameter("prompt: give either prompt (with count) or prompts, not both")
    params = spec.model_dump(exclude={"task", "format", "quality", "prompts", "count", "seeds"})
    params["prompt"] = spec.prompt_list()[0]
    for prompt in spec.prompt_list():  # every item's prompt is checked, not just the first
        generate_options({**params, "prompt": prompt}, settings, image_to_image)
    _check_format_size(spec.format, (spec.width, spec.height))
    return TaskPlan(spec, generate_options(params, settings, image_to_image))


def with_seeds(spec: GenerateTask) -> GenerateTask:
    """A generate job's spec with each item's seed chosen now and recorded: the given
    seed counts up item by item; without one, each item gets a random seed."""
    count = len(spec.prompt_list())
    if spec.seed is not None:
        seeds = [(spec.seed + index) % 2**63 for index in range(count)]
    else:
        seeds = [secrets.randbits(63) for _ in range(count)]
    return spec.model_copy(update={"seeds": seeds})


def configured_model(
    manifest: Manifest, settings: Settings, name: str, task: ModelTask
) -> ModelSpec:
    """``name`` if it is a ``task`` model that this platform is configured to load (a
    model declared in the manifest but not in the settings can never run here)."""
    spec = manifest.for_task(name, task)
    configured = settings.configured(task)
    if spec.name not in configured:
        listed = ", ".join(configured) or "none"
        raise UnknownModel(f"model: '{name}' is not served here; {task} models served: {listed}")
    return spec


def _check_format_size(fmt: str, size: tuple[int | None, int | None]) -> None:
    """A size the format cannot hold (WEBP 16383 px a side, JPEG 65535), refused up
    front where the request gives it (``codec.check_encodable`` checks the rest)."""
    limit = MAX_SIDES.get(fmt)
    for name, side in zip(("width", "height"), size, strict=True):
        if limit is not None and side is not None and side > limit:
            raise InvalidParameter(
                f"{name}: {side} px is over {fmt.upper()}'s limit of {limit} px; ask for png"
            )


def _legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """Jobs stored before specs kept ``{"name": "upscale" | "preset", ...}``."""
    if "task" in raw or "name" not in raw:
        return raw
    fields = {k: v for k, v in raw.items() if k != "name" and v is not None}
    if raw["name"] == "preset":
        output = fields.pop("output", None) or {}
        return {"task": "preset", **fields, **output}
    return {"task": raw["name"], **fields}


def _problems(exc: ValidationError) -> dict[str, str]:
    """Pydantic's errors as ``field: message`` by field (the task tag left out); the
    first field is the ``param`` at fault."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        if location and location[0] in TASKS:  # the union's branch, not a field
            location = location[1:]
        field = ".".join(location) or "task"
        problems.setdefault(field, f"{field}: {error['msg']}")
    return problems
