"""``/v1/jobs``: submit batches, read and list jobs, cancel, follow events (SSE), fetch
outputs (file:// stores; S3 hands out presigned URLs instead)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as FormFile

from services.api.deps import SettingsDep, decode_base64_image, read_upload, require_api_key
from services.api.schemas import COMMON_ERRORS, JOB_ERRORS, Cursor, JobId, json_errors
from services.auth.keys import ApiKey
from services.config import Settings
from services.errors import InvalidParameter, ServiceUnavailable, UnsupportedFormat
from services.jobs.models import TERMINAL_JOB, WEBHOOK_EVENTS, Job, JobPublic, JobStatus, iso
from services.jobs.service import JobRequest, JobService
from services.jobs.store import STREAM_ID_PATTERN, JobExpired
from services.jsontext import parse_object
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


_RESERVED = {"images", "urls", "task", "webhook_url", "webhook_events"}
_TASK = {"type": "string", "enum": list(TASKS),
         "description": "What to run on every input (default upscale; preset when a preset "
                        "is named)."}  # fmt: skip
_URLS = {"type": "array", "items": {"type": "string"},
         "description": "https URLs, or s3:// keys in the inputs bucket."}  # fmt: skip
_EVENTS = {"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}}


def _job_body(images: dict[str, Any], fields: str) -> dict[str, Any]:
    return {"schema": {
        "type": "object",
        "properties": {"task": _TASK, "images": images, "urls": _URLS,
                       "webhook_url": {"type": "string"}, "webhook_events": _EVENTS},
        "additionalProperties": {"description": f"The task's fields, {fields} (model, scale, "
                                 "format, prompt, prompts, count, preset, params...); an "
                                 "unknown field is refused."},
    }}  # fmt: skip


_JOB_BODIES = {
    "multipart/form-data": _job_body(
        {"type": "array", "items": {"type": "string", "format": "binary"}},
        "as on its sync route"),
    "application/json": _job_body(
        {"type": "array", "items": {"type": "string"},
         "description": "Images as base64, or data:image/...;base64, URLs."},
        "as JSON values"),
}  # fmt: skip
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_WAIT_S = 60  # ``Prefer: wait`` holds a request at most this long (as hosted APIs do)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d{1,6})(?:$|[,;\s])")


@router.post("/v1/jobs", status_code=202, response_model=JobPublic,
             openapi_extra={"requestBody": {"content": _JOB_BODIES, "required": True}})  # fmt: skip
async def create_job(
    request: Request,
    response: Response,
    jobs: JobsDep,
    owner: OwnerDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Submit a batch of any task, as multipart (image files) or JSON (base64 images,
    URLs): answers 202 with the envelope (its URL in ``Location``); items run
    asynchronously. A task that cannot run is refused here. ``Prefer: wait=N`` holds
    the answer up to N seconds (at most 60) for the job to end: 200 with the finished
    envelope when it did, else 202 with it as it stands."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        job_request = await _json_request(request, settings)
    elif kind in _FORMS:
        job_request = await _form_request(request, settings)
    else:
        given = kind or "a body without a type"
        raise UnsupportedFormat(f"a job is submitted as multipart/form-data (image files and "
                                f"the task's fields) or application/json (base64 images, "
                                f"urls), not {given}")  # fmt: skip
    job = await jobs.submit(owner, job_request, idempotency_key, str(request.base_url))
    response.headers["Location"] = str(request.url_for("read_job", job_id=job.id))
    if (wait_s := _prefer_wait(prefer)) is not None:
        job = await jobs.wait(job.id, owner, min(wait_s, MAX_WAIT_S), str(request.base_url))
        response.headers["Preference-Applied"] = f"wait={min(wait_s, MAX_WAIT_S)}"
        if job.status in TERMINAL_JOB:
            response.status_code = 200
    return job


def _prefer_wait(prefer: str | None) -> int | None:
    """The seconds of RFC 7240's ``Prefer: wait=N``; None when not asked."""
    found = _PREFER_WAIT.search(prefer or "")
    return int(found.group(1)) if found else None


async def _form_request(request: Request, settings: Settings) -> JobRequest:
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
    return JobRequest(spec, uploads, urls, _one(form, "webhook_url"), events)


async def _json_request(request: Request, settings: Settings) -> JobRequest:
    text = (await request.body()).decode("utf-8", errors="replace")
    body = parse_object("body", text, '{"task": "upscale", "urls": ["https://..."]}',
                        max_chars=settings.max_job_bytes)  # fmt: skip
    return json_job_request(body, settings)


def json_job_request(body: dict[str, Any], settings: Settings) -> JobRequest:
    """A JSON submission (a body, or a WebSocket's ``submit``): the task's fields as
    JSON values beside ``images`` (base64 or data: URLs, named ``image-0``...) and
    ``urls``."""
    images, urls = _strings(body, "images"), _strings(body, "urls")
    if len(images) > settings.max_job_items:
        raise InvalidParameter(f"images: a job takes at most {settings.max_job_items}")
    limit = settings.max_upload_bytes
    uploads = [(f"image-{i}", decode_base64_image(image, limit, f"images[{i}]"))
               for i, image in enumerate(images)]  # fmt: skip
    webhook_url = body.pop("webhook_url", None)
    if webhook_url is not None and not isinstance(webhook_url, str):
        raise InvalidParameter("webhook_url: a URL, as a string", param="webhook_url")
    events = _strings(body, "webhook_events") or ["completed"]
    task = body.pop("task", None) or ("preset" if "preset" in body else "upscale")
    spec = parse_task({"task": task, **body})
    return JobRequest(spec, uploads, urls, webhook_url, events)


def _strings(body: dict[str, Any], name: str) -> list[str]:
    values = body.pop(name, None) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidParameter(f"{name}: a list of strings", param=name)
    return values


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


@router.get("/v1/jobs/{job_id}/items/{index}/preview")
async def read_preview(
    job_id: JobId, index: Annotated[int, Path(ge=0)], jobs: JobsDep, owner: OwnerDep
) -> Response:
    """A mesh item's PNG render."""
    data, media_type = await jobs.output(job_id, owner, index, preview=True)
    return Response(data, media_type=media_type)


async def followed_job(
    job_id: JobId, request: Request, jobs: JobsDep, owner: OwnerDep,
    last_event_id: Annotated[str | None, Header(pattern=STREAM_ID_PATTERN)] = None,
) -> FollowedJob:  # fmt: skip
    """The job to follow, found (or a 404/410) before the stream starts: its head only
    (the envelope, URLs minted, comes once, at the end)."""
    job = await jobs.store.read(job_id, owner, with_items=False)
    return FollowedJob(jobs, job, owner, str(request.base_url), last_event_id or "0-0")


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses=json_errors(*COMMON_ERRORS, *JOB_ERRORS))  # fmt: skip
async def follow_job(
    followed: Annotated[FollowedJob, Depends(followed_job)],
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``job`` (its status changed), ``item`` (an item started or
    ended, with the job's progress), ``progress`` (tiles or diffusion steps within an
    item), and at the end ``completed`` with the whole envelope, after which the stream
    closes. Typed JSON data; a comment ping every 15 s keeps proxies from closing it;
    ``Last-Event-ID`` (an ``id:`` this stream sent) resumes. (Previews come over the
    WebSocket channel only, ``/v1/ws``.)"""
    async for batch in followed.batches():
        for event in batch:
            if event.kind != "preview":
                yield ServerSentEvent(id=event.id, event=event.kind, data=event.data)


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream: its id (resume after it), type and typed data."""

    id: str
    kind: str
    data: Any


class FollowedJob:
    """One job's event stream, from Redis entries to typed events, for SSE and the
    WebSocket channel alike."""

    def __init__(self, jobs: JobService, job: Job, owner: str, base_url: str, after: str) -> None:
        self.jobs, self.job, self.owner, self.base_url = jobs, job, owner, base_url
        self.after = after

    async def batches(self) -> AsyncIterator[list[JobEvent]]:
        """The events after ``after`` up to the job's end, as read (one batch per read:
        a slow reader reads bigger ones), then ``completed`` with the envelope."""
        wait_ms = None if self.job.status in TERMINAL_JOB else 10_000  # all there: no wait
        while True:
            entries = await self.jobs.store.events(self.job.id, self.after, block_ms=wait_ms)
            if entries:
                self.after = entries[-1][0]
                yield [JobEvent(entry_id, fields.get("type", "item"),
                                event_data(self.job.id, entry_id, fields))
                       for entry_id, fields in entries]  # fmt: skip
            ended = any(fields.get("job_status") in TERMINAL_JOB for _, fields in entries)
            if ended or (not entries and await self._over()):
                break
        try:
            job = await self.jobs.view(self.job.id, self.owner, self.base_url)
        except JobExpired:  # nothing more to tell
            return
        yield [JobEvent(self.after, "completed", job.public())]

    async def _over(self) -> bool:
        """Whether the job ended (a stream resumed after its last event sees none)."""
        try:
            head = await self.jobs.store.read(self.job.id, self.owner, with_items=False)
        except JobExpired:
            return True
        return head.status in TERMINAL_JOB


_NUMBERS = ("index", "done", "failed", "total", "attempt", "step", "steps")


def event_data(job_id: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry as typed JSON: numbers as numbers, the job's progress grouped,
    and when it happened (from the entry id's milliseconds) as ISO 8601."""
    milliseconds = int(entry_id.partition("-")[0])
    data: dict[str, Any] = {"job_id": job_id, "timestamp": iso(milliseconds / 1000)}
    for name, value in fields.items():
        if name != "type":
            data[name] = int(value) if name in _NUMBERS and value.lstrip("-").isdigit() else value
    if "total" in data:
        data["progress"] = {key: data.pop(key) for key in ("done", "failed", "total")}
    return data


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
