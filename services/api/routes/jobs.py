"""``/v1/jobs``: submit batches, read and list jobs, cancel, follow events (SSE), fetch
outputs (file:// stores; S3 hands out presigned URLs instead)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from services.api.deps import SettingsDep, read_upload, require_api_key
from services.auth.keys import ApiKey
from services.errors import InvalidParameter, ServiceUnavailable
from services.imaging.convert import ConvertFormat
from services.jobs.models import TERMINAL_JOB, Job, JobStatus
from services.jobs.service import JobRequest, JobService
from services.pipelines.presets import step_overrides

router = APIRouter(tags=["jobs"])


class JobListPublic(BaseModel):
    jobs: list[Job]
    next_cursor: float | None


class WebhookSecretPublic(BaseModel):
    """The secret that signs this key's webhooks (Standard Webhooks, ``whsec_...``)."""

    key: str
    secret: str


def get_jobs(request: Request) -> JobService:
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise ServiceUnavailable("jobs are not available: no job store is configured")
    return jobs


def owner_of(key: Annotated[ApiKey | None, Depends(require_api_key)]) -> str:
    """Jobs belong to the key that made them; without keys, to one anonymous tenant."""
    return key.prefix if key is not None else "anonymous"


JobsDep = Annotated[JobService, Depends(get_jobs)]
OwnerDep = Annotated[str, Depends(owner_of)]


@router.post("/v1/jobs", status_code=202)
async def create_job(
    jobs: JobsDep,
    owner: OwnerDep,
    settings: SettingsDep,
    images: Annotated[list[UploadFile] | None, File(description="Images to process.")] = None,
    urls: Annotated[
        list[str] | None, Form(description="https URLs, or s3:// keys in the inputs bucket.")
    ] = None,
    preset: Annotated[
        str | None, Form(description="Run a preset (GET /v1/presets) instead of upscaling.")
    ] = None,
    params: Annotated[
        str | None, Form(description='Step overrides as JSON: {"upscale": {"scale": 4}}.')
    ] = None,
    model: Annotated[str | None, Form()] = None,
    scale: Annotated[float | None, Form()] = None,
    width: Annotated[int | None, Form(ge=1)] = None,
    height: Annotated[int | None, Form(ge=1)] = None,
    output_format: Annotated[
        ConvertFormat | None, Form(alias="format", description="Default: png, or the preset's.")
    ] = None,
    quality: Annotated[int | None, Form(ge=1, le=100)] = None,
    webhook_url: Annotated[str | None, Form()] = None,
    webhook_events: Annotated[list[str] | None, Form(description="item, completed")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Submit a batch: answers 202 with the job envelope; items run asynchronously."""
    uploads = []
    for upload in images or []:
        uploads.append((upload.filename or "image", await read_upload(upload, settings)))
    pipeline: dict[str, object]
    if preset is not None:
        output = {k: v for k, v in (("format", output_format), ("quality", quality)) if v}
        pipeline = {"name": "preset", "preset": preset, "params": step_overrides(params),
                    "output": output}  # fmt: skip
    else:
        pipeline = {
            "name": "upscale", "model": model or settings.default_model, "scale": scale,
            "width": width, "height": height, "format": output_format or "png",
            "quality": quality or 90,
        }  # fmt: skip
    events = webhook_events or ["completed"]
    request = JobRequest(pipeline, uploads, list(urls or []), webhook_url, events)
    return await jobs.submit(owner, request, idempotency_key)


@router.get("/v1/jobs/{job_id}")
async def read_job(job_id: str, jobs: JobsDep, owner: OwnerDep) -> Job:
    return await jobs.view(job_id, owner)


@router.get("/v1/jobs")
async def read_jobs(
    jobs: JobsDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    cursor: float | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobListPublic:
    found, next_cursor = await jobs.list_jobs(owner, status, cursor, limit)
    return JobListPublic(jobs=found, next_cursor=next_cursor)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, jobs: JobsDep, owner: OwnerDep) -> Job:
    return await jobs.cancel(job_id, owner)


@router.get("/v1/jobs/{job_id}/items/{index}/output")
async def read_output(job_id: str, index: int, jobs: JobsDep, owner: OwnerDep) -> Response:
    data, media_type = await jobs.output(job_id, owner, index)
    return Response(data, media_type=media_type)


@router.get("/v1/jobs/{job_id}/events")
async def follow_job(
    job_id: str,
    jobs: JobsDep,
    owner: OwnerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: item and job progress; ends on a terminal state."""
    job = await jobs.view(job_id, owner)
    return StreamingResponse(
        _events(jobs, job, last_event_id or "0-0"), media_type="text/event-stream"
    )


async def _events(jobs: JobService, job: Job, after: str) -> AsyncIterator[str]:
    if job.status in TERMINAL_JOB and after == "0-0":
        yield _sse("0-0", "job", {"job_status": job.status.value})
    while True:
        events = await jobs.store.events(job.id, after, block_ms=10_000)
        if not events:
            yield ": keep-alive\n\n"
            continue
        for entry_id, fields in events:
            after = entry_id
            yield _sse(entry_id, fields.get("type", "item"), fields)
            if fields.get("job_status") in TERMINAL_JOB:
                return


def _sse(entry_id: str, event: str, data: dict[str, str]) -> str:
    return f"id: {entry_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/v1/webhooks/secret")
async def read_webhook_secret(
    jobs: JobsDep, key: Annotated[ApiKey | None, Depends(require_api_key)]
) -> WebhookSecretPublic:
    """The caller's webhook signing secret, to verify deliveries with."""
    prefix = _keyed(key)
    secret = await jobs.secrets.keys.webhook_secret(prefix)
    if secret is None:
        raise InvalidParameter(f"key {prefix} has no webhook secret yet: rotate it")
    return WebhookSecretPublic(key=prefix, secret=secret)


@router.post("/v1/webhooks/secret/rotate")
async def rotate_webhook_secret(
    jobs: JobsDep, key: Annotated[ApiKey | None, Depends(require_api_key)]
) -> WebhookSecretPublic:
    """A new signing secret for the caller's key; later deliveries are signed with it."""
    prefix = _keyed(key)
    return WebhookSecretPublic(
        key=prefix, secret=await jobs.secrets.keys.rotate_webhook_secret(prefix)
    )


def _keyed(key: ApiKey | None) -> str:
    if key is None:
        raise InvalidParameter(
            "webhook secrets belong to API keys, which are off here; the operator's "
            "webhook_secret setting signs webhooks"
        )
    return key.prefix
