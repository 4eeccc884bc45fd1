"""``/v1/jobs``: submit batches, read and list jobs, cancel, follow events (SSE), fetch
outputs (file:// stores; S3 hands out presigned URLs instead)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as FormFile

from services.api.deps import SettingsDep, read_upload, require_api_key
from services.api.schemas import Cursor, JobId
from services.auth.keys import ApiKey
from services.errors import InvalidParameter, ServiceUnavailable, UnsupportedFormat
from services.jobs.models import TERMINAL_JOB, Job, JobPublic, JobStatus
from services.jobs.service import JobRequest, JobService
from services.jobs.store import STREAM_ID_PATTERN
from services.pipelines.tasks import form_fields, parse_task
from services.registry import TASKS

router = APIRouter(tags=["jobs"])


class JobListPublic(BaseModel):
    jobs: list[JobPublic]
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
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


_RESERVED = {"images", "urls", "task", "webhook_url", "webhook_events"}
_JOB_FORM = {
    "multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "task": {"type": "string", "enum": list(TASKS),
                     "description": "What to run on every input (default upscale; preset "
                                    "when a preset is named)."},
            "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "urls": {"type": "array", "items": {"type": "string"},
                     "description": "https URLs, or s3:// keys in the inputs bucket."},
            "webhook_url": {"type": "string"},
            "webhook_events": {"type": "array", "items": {"type": "string",
                                                          "enum": ["item", "completed"]}},
        },
        "additionalProperties": {"description": "The task's fields, as on its sync route "
                                 "(model, scale, format, prompt, prompts, count, preset, "
                                 "params...); an unknown field is refused."},
    }},
}  # fmt: skip


@router.post("/v1/jobs", status_code=202, response_model=JobPublic,
             openapi_extra={"requestBody": {"content": _JOB_FORM, "required": True}})  # fmt: skip
async def create_job(
    request: Request,
    response: Response,
    jobs: JobsDep,
    owner: OwnerDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Submit a batch of any task: answers 202 with the envelope (its URL in
    ``Location``); items run asynchronously. A task that cannot run is refused here."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        given = kind or "a body without a type"
        raise UnsupportedFormat(f"a job is submitted as multipart/form-data (images and "
                                f"the task's fields), not {given}")  # fmt: skip
    form = await request.form(max_files=settings.max_job_items + 1,
                              max_fields=settings.max_job_items + 64)  # fmt: skip
    uploads = [(upload.filename or "image", await read_upload(upload, settings))
               for upload in _files(form)]  # fmt: skip
    fields = {name: [str(v) for v in form.getlist(name)] for name in form
              if name not in _RESERVED}  # fmt: skip
    task = _one(form, "task") or ("preset" if "preset" in fields else "upscale")
    spec = parse_task(form_fields(task, fields))
    events = [str(v) for v in form.getlist("webhook_events")] or ["completed"]
    urls = [str(v) for v in form.getlist("urls")]
    job_request = JobRequest(spec, uploads, urls, _one(form, "webhook_url"), events)
    job = await jobs.submit(owner, job_request, idempotency_key, str(request.base_url))
    response.headers["Location"] = str(request.url_for("read_job", job_id=job.id))
    return job


def _files(form: FormData) -> list[FormFile]:
    uploads = form.getlist("images")
    if any(not isinstance(upload, FormFile) for upload in uploads):
        raise InvalidParameter("images: send files (multipart), not text; URLs go in urls")
    return [upload for upload in uploads if isinstance(upload, FormFile)]


def _one(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1 or any(not isinstance(value, str) for value in values):
        raise InvalidParameter(f"{name}: send it once, as text")
    return str(values[0]) if values else None


@router.get("/v1/jobs/{job_id}", response_model=JobPublic)
async def read_job(job_id: JobId, request: Request, jobs: JobsDep, owner: OwnerDep) -> Job:
    return await jobs.view(job_id, owner, str(request.base_url))


@router.get("/v1/jobs")
async def read_jobs(
    jobs: JobsDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobListPublic:
    found, next_cursor = await jobs.list_jobs(owner, status, cursor, limit)
    return JobListPublic(jobs=[job.public() for job in found], next_cursor=next_cursor)


@router.delete("/v1/jobs/{job_id}", response_model=JobPublic)
async def cancel_job(job_id: JobId, request: Request, jobs: JobsDep, owner: OwnerDep) -> Job:
    return await jobs.cancel(job_id, owner, str(request.base_url))


@router.get("/v1/jobs/{job_id}/items/{index}/output")
async def read_output(
    job_id: JobId, index: Annotated[int, Path(ge=0)], jobs: JobsDep, owner: OwnerDep
) -> Response:
    data, media_type = await jobs.output(job_id, owner, index)
    return Response(data, media_type=media_type)


@router.get("/v1/jobs/{job_id}/events")
async def follow_job(
    job_id: JobId,
    jobs: JobsDep,
    owner: OwnerDep,
    last_event_id: Annotated[str | None, Header(pattern=STREAM_ID_PATTERN)] = None,
) -> StreamingResponse:
    """Server-Sent Events: item and job progress; ends on a terminal state. Resume
    with ``Last-Event-ID`` (an ``id:`` this stream sent)."""
    job = await jobs.view(job_id, owner)
    return StreamingResponse(_events(jobs, job, last_event_id or "0-0"),
                             media_type="text/event-stream", headers=_SSE_HEADERS)  # fmt: skip


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
