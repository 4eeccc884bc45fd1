"""FastAPI dependencies: the settings, manifest and backend a route works with.

The serving layer puts them on ``app.state`` when the ingress starts; routes read them
through these aliases and never reach into the environment themselves.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import Depends, Request, Response, params
from starlette.datastructures import UploadFile as FormFile

from services.auth.guard import KeyGuard
from services.auth.keys import ApiKey
from services.config import Settings
from services.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidParameter,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedFormat,
)
from services.models.manifest import Manifest
from services.pipelines.presets import PresetLibrary
from services.pipelines.tasks import TaskContext, parse_task, plan_task
from services.pipelines.usecases import TaskResult, run_task
from services.platform import PlatformBackend, Readiness, ReadinessCache
from services.telemetry.metrics import PlatformMetrics, record_image


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_manifest(request: Request) -> Manifest:
    manifest: Manifest = request.app.state.manifest
    return manifest


def get_metrics(request: Request) -> PlatformMetrics:
    metrics: PlatformMetrics = request.app.state.metrics
    return metrics


def get_presets(request: Request) -> PresetLibrary:
    presets: PresetLibrary = request.app.state.presets
    return presets


def get_backend(request: Request) -> PlatformBackend:
    backend: PlatformBackend | None = getattr(request.app.state, "backend", None)
    if backend is None:
        raise ServiceUnavailable("the model deployments are not connected yet")
    return backend


async def read_readiness(request: Request) -> Readiness | None:
    """The deployments' readiness from the cache (never a wait on a busy model); None
    before the first answer."""
    cache: ReadinessCache | None = getattr(request.app.state, "readiness", None)
    if cache is None:
        raise ServiceUnavailable("the model deployments are not connected yet")
    return await cache.get()


class TaskRunner:
    """A sync route's way through a task: parse the spec, plan it, run the use case and
    count the image; the route only maps its form to fields and the result to a response."""

    def __init__(self, context: TaskContext, backend: PlatformBackend,
                 metrics: PlatformMetrics) -> None:  # fmt: skip
        self.context, self.backend, self.metrics = context, backend, metrics

    async def run(
        self, fields: dict[str, Any], data: bytes | None, image_to_image: bool = False
    ) -> TaskResult:
        """Refuse a bad spec (422 naming the field) before reading pixels, then run it
        within the request deadline (past it, the work is cancelled and a retryable 503
        says so: the platform was busy, the request itself fit the budget)."""
        plan = plan_task(parse_task(fields), self.context, image_to_image)
        deadline = self.context.settings.request_deadline_s
        try:
            async with asyncio.timeout(deadline):  # cancels the deployment calls too
                result = await run_task(plan, data, self.backend, self.context.settings)
        except TimeoutError:
            raise DeadlineExceeded(f"the request ran past its deadline of {deadline:g} s "
                                   "(request_deadline_s) and was cancelled") from None  # fmt: skip
        record_image(self.metrics, result.metric, "sync", result.input_size,
                     result.output_size, result.step_seconds)  # fmt: skip
        return result


def task_response(result: TaskResult) -> Response:
    """A sync task's answer: the encoded output with its facts as headers."""
    return Response(result.data, media_type=result.content_type, headers=result.headers)


def get_runner(request: Request) -> TaskRunner:
    state = request.app.state
    context = TaskContext(state.manifest, state.settings, state.presets)
    return TaskRunner(context, get_backend(request), state.metrics)


async def require_api_key(request: Request) -> ApiKey | None:
    """The caller's key when keys are on (401/429 otherwise); None when they are off."""
    guard: KeyGuard | None = request.app.state.key_guard
    if guard is None:
        return None
    return await guard.check(request.headers.get("authorization"))


async def require_admin(request: Request) -> ApiKey | None:
    """An admin key when keys are on (403 for others); open when keys are off, like
    every route of the embedded default."""
    key = await require_api_key(request)
    if key is not None and not key.admin:
        raise Forbidden(f"key {key.prefix} is not an admin key: pixserve keys create --admin")
    return key


async def read_upload(upload: FormFile, settings: Settings) -> bytes:
    """An uploaded image's bytes, refused past ``max_upload_bytes`` without reading more."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        name = upload.filename or "upload"
        raise PayloadTooLarge(f"{name} is over the limit of {settings.max_upload_bytes} bytes")
    return data


def decode_base64_image(text: str, limit: int, name: str) -> bytes:
    """An image sent as text: a ``data:image/...;base64,`` URL or bare base64; refused
    past ``limit`` bytes before decoding."""
    payload = text
    if text.startswith("data:"):
        header, _, payload = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidParameter(f"{name}: data: URLs must be base64 (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > limit:
        raise PayloadTooLarge(f"{name}: the image is over the limit of {limit} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:  # binascii's errors, and text that is not ASCII
        raise InvalidParameter(f"{name}: not valid base64: {exc}") from None


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def strict_body(request: Request) -> None:
    """A body of the wrong type is a 415 saying which type the route takes, and a form
    field the route does not declare is a 422 naming it: a misspelled ``scal=2`` must
    not silently run the default. (JSON bodies are strict through their models.)"""
    body_params = getattr(getattr(request.scope.get("route"), "dependant", None),
                          "body_params", None)  # fmt: skip
    if not body_params or request.method not in ("POST", "PUT", "PATCH"):
        return
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    wants_form = any(isinstance(param.field_info, params.Form) for param in body_params)
    wanted = "multipart/form-data" if wants_form else "application/json"
    if (kind in _FORM_TYPES) != wants_form or (not wants_form and kind != wanted):
        given = kind or "a body without a Content-Type"
        raise UnsupportedFormat(f"this route takes {wanted}, not {given}")
    if wants_form:
        known = {param.alias for param in body_params}
        if unknown := sorted(set((await request.form()).keys()) - known):
            raise InvalidParameter(f"unknown field(s): {', '.join(unknown)}; this route takes "
                                   f"{', '.join(sorted(known))}", param=unknown[0])  # fmt: skip


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManifestDep = Annotated[Manifest, Depends(get_manifest)]
BackendDep = Annotated[PlatformBackend, Depends(get_backend)]
MetricsDep = Annotated[PlatformMetrics, Depends(get_metrics)]
PresetsDep = Annotated[PresetLibrary, Depends(get_presets)]
RunnerDep = Annotated[TaskRunner, Depends(get_runner)]
ReadinessDep = Annotated[Readiness | None, Depends(read_readiness)]
