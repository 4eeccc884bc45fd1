"""The API's backend over Serve handles: tile calls and readiness of the model deployments."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from ray import serve
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle

from services.api.schemas import DeploymentReadiness, DeploymentView
from services.config import Settings
from services.errors import ModelNotReady, PixserveError, ServiceUnavailable
from services.imaging.codec import DecodedImage
from services.imaging.convert import Converted, ConvertOptions
from services.models.diffusion import Generated, GenerateOptions
from services.models.manifest import (
    DEPLOYMENT_OF,
    MODEL_DEPLOYMENTS,
    Manifest,
    load_manifest,
    not_configured_reason,
)
from services.models.runtime import EngineStatus
from services.models.tile_io import TileJob, TileOutput
from services.models.vision import Description
from services.pipelines.faces import FaceOptions, FaceResult
from services.pipelines.presets import IMAGE_STEPS, SOURCE, Plan, PlanResult


def graph_backend(
    settings: Settings,
    upscaler: DeploymentHandle[Any],
    denoiser: DeploymentHandle[Any],
    codec: DeploymentHandle[Any],
    faces: DeploymentHandle[Any],
    diffusion: DeploymentHandle[Any],
    vision: DeploymentHandle[Any],
) -> ServeBackend:
    """The backend the Ingress and the Dispatcher both use: every model deployment of
    the graph, and the manifest that says which deployment serves which model."""
    manifest = load_manifest(settings.extra_manifest)
    return ServeBackend(upscaler, codec, denoiser, manifest, faces=faces, diffusion=diffusion,
                        vision=vision, settings=settings)  # fmt: skip


class ServeBackend:
    """Implements ``PlatformBackend`` by calling the model deployments' handles: tiles
    go to the deployment serving the model's task (Upscaler or Denoiser)."""

    def __init__(
        self,
        upscaler: DeploymentHandle[Any],
        codec: DeploymentHandle[Any] | None = None,
        denoiser: DeploymentHandle[Any] | None = None,
        manifest: Manifest | None = None,
        status_timeout_s: float = 5.0,
        faces: DeploymentHandle[Any] | None = None,
        diffusion: DeploymentHandle[Any] | None = None,
        vision: DeploymentHandle[Any] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.tile_deployments = {"Upscaler": upscaler}
        if denoiser is not None:
            self.tile_deployments["Denoiser"] = denoiser
        # those answering status() and run_step()
        self.model_deployments = dict(self.tile_deployments)
        if faces is not None:
            self.model_deployments["FaceRestorer"] = faces
        if diffusion is not None:
            self.model_deployments["Diffusion"] = diffusion
        if vision is not None:
            self.model_deployments["Vision"] = vision
        self.codec, self.faces, self.diffusion, self.vision = codec, faces, diffusion, vision
        self.serving = {  # model name -> the deployment that serves it
            name: DEPLOYMENT_OF[spec.task] for name, spec in (manifest.models.items()
                                                               if manifest else [])
        }  # fmt: skip
        self.status_timeout_s = status_timeout_s
        # left out of the graph because nothing is configured for them -> why
        self.unconfigured = {
            name: not_configured_reason(name, settings)
            for name in MODEL_DEPLOYMENTS
            if settings is not None and name not in self.model_deployments
        }

    async def upscale_image(self, job: TileJob) -> TileOutput:
        """To the deployment serving the job's model (Upscaler or Denoiser)."""
        name = self.serving.get(job.model, "Upscaler")
        job = dataclasses.replace(job, request_id=_request_id())
        output: TileOutput = await self._call(self.tile_deployments.get(name), name, "upscale", job)
        return output

    async def convert(self, data: bytes, options: ConvertOptions) -> Converted:
        converted: Converted = await self._call(self.codec, "Codec", "convert", data, options)
        return converted

    async def restore_faces(self, image: DecodedImage, options: FaceOptions) -> FaceResult:
        restored: FaceResult = await self._call(
            self.faces, "FaceRestorer", "restore", image, options, _request_id()
        )
        return restored

    async def generate(self, options: GenerateOptions, image: DecodedImage | None) -> Generated:
        """To a replica holding the checkpoint, when one does (Serve's multiplexing)."""
        checkpoint = options.checkpoint
        handle = (
            None
            if self.diffusion is None
            else self.diffusion.options(multiplexed_model_id=checkpoint)
        )
        generated: Generated = await self._call(handle, "Diffusion", "generate", options, image)
        return generated

    async def describe(self, image: DecodedImage, want: list[str]) -> Description:
        described: Description = await self._call(self.vision, "Vision", "describe", image, want)
        return described

    async def answer(
        self, image: DecodedImage, question: str, max_tokens: int
    ) -> tuple[str, int, int]:
        answered: tuple[str, int, int] = await self._call(self.vision, "Vision", "answer", image,
                                                     question, max_tokens)  # fmt: skip
        return answered

    def serves(self) -> set[str]:
        return set(self.model_deployments)

    async def _call(
        self, handle: DeploymentHandle[Any] | None, name: str, method: str, *args: Any
    ) -> Any:
        """A model deployment's call; one left out for want of configuration is a 503
        naming the settings that would start it."""
        if handle is None and name in self.unconfigured:
            raise ModelNotReady(self.unconfigured[name])
        return await _call(handle, name, method, *args)

    async def run_plan(self, image: DecodedImage, plan: Plan) -> PlanResult:
        """Chain the steps' calls: each gets the previous call's DeploymentResponse, so
        intermediate images move between replicas through Ray's object store, never
        back through this process; only the encoded result and texts come back."""
        produced: dict[str, Any] = {SOURCE: image}
        texts: dict[str, Any] = {}
        for step in plan.steps:
            handle = self.model_deployments.get(step.deployment)
            if handle is None and step.deployment in self.unconfigured:
                raise ModelNotReady(self.unconfigured[step.deployment])
            if handle is None:
                raise ServiceUnavailable(f"no {step.deployment} deployment is connected")
            if isinstance(step.options, GenerateOptions):  # to a replica holding it
                handle = handle.options(multiplexed_model_id=step.options.checkpoint)
            response = handle.run_step.remote(produced[step.input], step.options)
            (produced if step.kind in IMAGE_STEPS else texts)[step.id] = response
        encoding = None
        if plan.output is not None:
            if self.codec is None:
                raise ServiceUnavailable("no Codec deployment is connected")
            encoding = self.codec.encode.remote(produced[plan.result], plan.output)
        try:
            encoded = await encoding if encoding is not None else None
            outputs = {name: await response for name, response in texts.items()}
        except RayError as exc:
            raise ServiceUnavailable(f"preset '{plan.preset}' failed: {exc}") from exc
        for value in (encoded, *outputs.values()):
            if isinstance(value, PixserveError):
                raise value
        return PlanResult(encoded, outputs)

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        """Each model deployment: ready when none of its models is missing (and the
        Upscaler has at least one)."""
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
            ready=(bool(status.loaded) or name != "Upscaler") and not status.missing,
            device=status.device,
            loaded=sorted(status.loaded),
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


async def _call(handle: DeploymentHandle[Any] | None, name: str, method: str, *args: Any) -> Any:
    """One call to a model deployment: an absent or failing deployment is a 503; an
    error it returns (bad input, missing model) is raised as itself."""
    if handle is None:
        raise ServiceUnavailable(f"no {name} deployment is connected")
    try:
        result = await getattr(handle, method).remote(*args)
    except RayError as exc:
        raise ServiceUnavailable(f"the {name} deployment failed: {exc}") from exc
    if isinstance(result, PixserveError):
        raise result
    return result


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
