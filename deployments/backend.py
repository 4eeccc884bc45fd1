"""The API's backend over Serve handles: tile calls and readiness of the model deployments."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.metrics import platform_metrics
from services.admin.control import ModelCommand, ReplicaReport, broadcast, channel, modes_key
from services.config import Settings
from services.errors import (
    EngineOutOfMemory,
    InternalError,
    NotConfigured,
    PixserveError,
    ServiceUnavailable,
)
from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertOptions
from services.imaging.faces import Face
from services.jobs.progress import CURRENT_ITEM
from services.models.diffusion import Generated, GenerateOptions
from services.models.manifest import Manifest, ModelSpec, load_manifest
from services.models.mesh_io import MeshOptions, MeshOutput
from services.models.runtime import EngineStatus
from services.models.tile_io import TileJob, TileOutput
from services.models.vision import Answer, Description, Question
from services.pipelines.faces import DetectOptions, FaceOptions, FaceResult
from services.pipelines.presets import IMAGE_STEPS, SOURCE, Plan, PlanResult
from services.platform import DeploymentReadiness, DeploymentView
from services.redis_client import connect_redis
from services.registry import (
    DEPLOYMENT_OF_TASK,
    MODEL_DEPLOYMENTS,
    OPTIONAL_DEPLOYMENTS,
    TILE_FALLBACK,
    not_configured_reason,
)
from services.telemetry.metrics import PlatformMetrics

logger = logging.getLogger(__name__)


def graph_backend(
    settings: Settings, handles: Mapping[str, DeploymentHandle[Any]], background: bool = False
) -> ServeBackend:
    """The backend the Ingress and the Dispatcher both use: the graph's deployments by
    name, and the manifest that says which deployment serves which model. The
    Dispatcher's calls are ``background``: interactive requests go first on the model
    replicas (services/models/priority.py)."""
    return ServeBackend(handles, load_manifest(settings.extra_manifest), settings,
                        background=background, metrics=platform_metrics())  # fmt: skip


class ServeBackend:
    """Implements ``PlatformBackend`` by calling the deployments' handles, looked up by
    name (services/registry.py): tiles go to the deployment serving the model's task."""

    def __init__(
        self,
        handles: Mapping[str, DeploymentHandle[Any]],
        manifest: Manifest,
        settings: Settings | None = None,
        status_timeout_s: float = 5.0,
        background: bool = False,
        metrics: PlatformMetrics | None = None,
    ) -> None:
        self.handles = dict(handles)
        self.metrics = metrics  # counts the CPU fallbacks
        self.priority = {"background": True} if background else {}  # model calls' kwargs
        self.model_deployments = {name: handle for name, handle in self.handles.items()
                                  if name in MODEL_DEPLOYMENTS}  # fmt: skip
        self.serving = {name: DEPLOYMENT_OF_TASK[spec.task]  # model name -> its deployment
                        for name, spec in manifest.models.items()}  # fmt: skip
        self.status_timeout_s = status_timeout_s
        # left out of the graph because nothing is configured for them -> why
        self.unconfigured = {
            name: not_configured_reason(name, settings)
            for name in MODEL_DEPLOYMENTS
            if settings is not None and name not in self.handles
        }
        self.settings = settings

    def adopt(self, spec: ModelSpec) -> None:
        self.serving[spec.name] = DEPLOYMENT_OF_TASK[spec.task]

    async def control(
        self, deployment: str, command: ModelCommand, timeout_s: float
    ) -> tuple[int, list[ReplicaReport]]:
        """Over the control channel (Redis pub/sub) of this application's deployment."""
        if deployment not in self.handles or self.settings is None:
            return 0, []
        app = serve.get_replica_context().app_name
        client = connect_redis(self.settings)
        try:
            if command.action == "memory_mode":  # replicas started later take it too
                if command.mode is None:
                    await client.hdel(modes_key(app), deployment)
                else:
                    await client.hset(modes_key(app), deployment, command.mode)
            return await broadcast(client, channel(app, deployment), command, timeout_s)
        finally:
            await client.aclose()

    async def upscale_image(self, job: TileJob) -> TileOutput:
        """To the deployment serving the job's model (Upscaler or Denoiser)."""
        name = self.serving.get(job.model, "Upscaler")
        job = dataclasses.replace(job, request_id=_request_id(), progress_key=CURRENT_ITEM.get())
        try:
            output: TileOutput = await self._call(name, "upscale", job)
        except EngineOutOfMemory as exc:
            if TILE_FALLBACK not in self.handles:  # cpu_fallback off
                raise
            logger.warning("%s: %s; running it once more on %s", name, exc.message, TILE_FALLBACK)
            job = dataclasses.replace(job, request_id=_request_id())
            output = await self._call(TILE_FALLBACK, "upscale", job)
            if self.metrics is not None:
                self.metrics.cpu_fallbacks.inc(tags={"model": job.model})
            return dataclasses.replace(output, fallback="cpu")
        return output

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        converted: Converted = await self._call("Codec", "convert", data, options)
        return converted

    async def restore_faces(self, image: DecodedImage, options: FaceOptions) -> FaceResult:
        restored: FaceResult = await self._call(
            "FaceRestorer", "restore", image, options, _request_id()
        )
        return restored

    async def detect_faces(self, image: DecodedImage, options: DetectOptions) -> list[Face]:
        faces: list[Face] = await self._call("FaceRestorer", "detect", image, options)
        return faces

    async def generate(self, options: GenerateOptions, image: DecodedImage | None) -> Generated:
        """To a replica holding the checkpoint, when one does (Serve's multiplexing)."""
        options = dataclasses.replace(options, progress_key=CURRENT_ITEM.get())
        generated: Generated = await self._call("Diffusion", "generate", options, image,
                                                multiplexed=options.checkpoint)  # fmt: skip
        return generated

    async def describe(self, image: DecodedImage, want: list[str]) -> Description:
        described: Description = await self._call("Vision", "describe", image, want)
        return described

    async def mesh(self, image: DecodedImage, options: MeshOptions) -> MeshOutput:
        meshed: MeshOutput = await self._call("Mesher", "mesh", image, options)
        return meshed

    async def answer(self, image: DecodedImage, question: Question) -> AsyncIterator[str | Answer]:
        """The Vision deployment's streamed answer: text pieces, then the ``Answer``."""
        handle = self._handle("Vision").options(stream=True)
        pieces = handle.answer.remote(image, question, **self.priority)
        assert isinstance(pieces, DeploymentResponseGenerator)  # stream=True
        try:
            async for piece in pieces:
                yield piece
        except RayError as exc:
            raise _raised(exc, "the Vision deployment") from None

    def serves(self) -> set[str]:
        return set(self.model_deployments)

    async def _call(
        self, name: str, method: str, *args: Any, multiplexed: str | None = None
    ) -> Any:
        """A deployment's call by name (to a replica holding ``multiplexed``, when one
        does); one left out for want of configuration is a 501 naming the settings."""
        handle = self._handle(name)
        if multiplexed is not None:
            handle = handle.options(multiplexed_model_id=multiplexed)
        priority = self.priority if name in OPTIONAL_DEPLOYMENTS else {}
        return await _call(handle, name, method, *args, **priority)

    def _handle(self, name: str) -> DeploymentHandle[Any]:
        """The deployment's handle; a 501 naming the settings when it was left out for
        want of configuration, a 503 when it is not connected."""
        handle = self.handles.get(name)
        if handle is None and name in self.unconfigured:
            raise NotConfigured(self.unconfigured[name])
        if handle is None:
            raise ServiceUnavailable(f"no {name} deployment is connected")
        return handle

    async def run_plan(self, image: DecodedImage, plan: Plan) -> PlanResult:
        """Chain the steps' calls: each gets the previous call's DeploymentResponse, so
        intermediate images move between replicas through Ray's object store, never
        back through this process; only the encoded result and texts come back."""
        produced: dict[str, Any] = {SOURCE: image}
        texts: dict[str, Any] = {}
        for step in plan.steps:
            handle = self._handle(step.deployment)
            if isinstance(step.options, GenerateOptions):  # to a replica holding it
                handle = handle.options(multiplexed_model_id=step.options.checkpoint)
            response = handle.run_step.remote(produced[step.input], step.options,
                                              **self.priority)  # fmt: skip
            (produced if step.kind in IMAGE_STEPS else texts)[step.id] = response
        mesh = texts.pop(plan.steps[-1].id) if plan.mesh is not None else None
        encoding = None
        if plan.output is not None:
            if (codec := self.handles.get("Codec")) is None:
                raise ServiceUnavailable("no Codec deployment is connected")
            encoding = codec.encode.remote(produced[plan.result], plan.output)
        try:
            encoded = await encoding if encoding is not None else None
            outputs = {name: await response for name, response in texts.items()}
            meshed = await mesh if mesh is not None else None
        except RayError as exc:
            raise _raised(exc, f"preset '{plan.preset}'") from None
        return PlanResult(encoded, outputs, meshed)

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        """Each model deployment: ready when none of its models is missing (and the
        Upscaler has at least one, loaded or resting: an unloaded model loads on use)."""
        names = list(self.model_deployments)
        answers = await asyncio.gather(*(self._status(name) for name in names))
        absent = {name: DeploymentReadiness(ready=True, configured=False, detail=reason)
                  for name, reason in self.unconfigured.items()}  # fmt: skip
        return dict(zip(names, answers, strict=True)) | absent

    async def _status(self, name: str) -> DeploymentReadiness:
        try:
            call = self.model_deployments[name].status.remote()
            status: EngineStatus = await asyncio.wait_for(call, self.status_timeout_s)
        except (RayError, TimeoutError) as exc:
            return DeploymentReadiness(ready=False, error=f"unreachable: {type(exc).__name__}")
        return DeploymentReadiness(
            ready=(bool(status.loaded or status.resting) or name != "Upscaler")
            and not status.missing,
            device=status.device,
            loaded=sorted(status.loaded),
            resting=status.resting,
            missing=status.missing,
        )

    async def deployments(self) -> tuple[str, list[DeploymentView]]:
        """From the Serve controller's instance details (what Ray's dashboard shows)."""
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is None:
            raise ServiceUnavailable("the Serve controller is not reachable")
        details = await asyncio.wait_for(
            client._controller.get_serve_instance_details.remote(), self.status_timeout_s
        )
        name = serve.get_replica_context().app_name
        app = details.get("applications", {}).get(name, {})
        deployments = app.get("deployments", {})
        views = [_deployment_view(name, entry) for name, entry in deployments.items()]
        absent = [
            DeploymentView(name=name, status="NOT_CONFIGURED", running=0, target=0, message=why)
            for name, why in self.unconfigured.items()
        ]
        return name, views + absent


async def _call(
    handle: DeploymentHandle[Any], name: str, method: str, *args: Any, **kwargs: Any
) -> Any:
    """One call to a deployment: a failing deployment is a 503; an error it raised (bad
    input, missing model) is raised here as itself."""
    try:
        return await getattr(handle, method).remote(*args, **kwargs)
    except RayError as exc:
        raise _raised(exc, f"the {name} deployment") from None


def _raised(exc: RayError, what: str) -> PixserveError:
    """The platform's own error a replica raised (through any chain of steps, each
    wrapping its upstream's); a 500 for any other exception of a replica's code (a bug:
    the same input fails again); a 503 for what a retry can fix (a replica that died or
    is unavailable, back pressure). Never Ray's traceback, class names or ids in a
    message: the replica's own log has them."""
    cause: BaseException | None = exc
    while isinstance(cause, RayTaskError) and cause.cause is not None and cause.cause is not cause:
        cause = cause.cause
    if isinstance(cause, PixserveError) and not isinstance(cause, RayError):
        return cause
    if isinstance(exc, RayTaskError) and cause is not None and not isinstance(cause, RayError):
        return InternalError(f"{what} could not process this request; the server log has "
                             "the details")  # fmt: skip
    return ServiceUnavailable(f"{what} is unavailable (a replica stopped or is at capacity); "
                              "retry shortly")  # fmt: skip


def _deployment_view(name: str, entry: dict[str, Any]) -> DeploymentView:
    config = entry.get("deployment_config", {})
    actor = config.get("ray_actor_options") or {}
    autoscaling = config.get("autoscaling_config") or {}
    running = [r for r in entry.get("replicas", []) if _value(r.get("state")) == "RUNNING"]
    return DeploymentView(
        name=name,
        status=_value(entry.get("status", "UNKNOWN")),
        running=len(running),
        target=int(entry.get("target_num_replicas", 0)),
        num_cpus=float(actor.get("num_cpus") or 0),
        num_gpus=float(actor.get("num_gpus") or 0),
        min_replicas=autoscaling.get("min_replicas"),
        max_replicas=autoscaling.get("max_replicas"),
        message=str(entry.get("message", "")),
    )


def _value(state: Any) -> str:
    """An enum's value (Serve's details keep its str-Enums) or the text itself."""
    return str(getattr(state, "value", state))


def _request_id() -> str:
    """Serve's request id when inside a request (it is returned as x-request-id)."""
    try:
        return serve.context._get_serve_request_context().request_id or uuid.uuid4().hex
    except AttributeError:
        return uuid.uuid4().hex
