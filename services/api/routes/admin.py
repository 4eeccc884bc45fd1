"""``/v1/admin``: the operator's data behind ``/dashboard`` (an admin key when keys are
on): the overview, every tenant's jobs, dead letters and their retry, quality reports."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel

from services.admin.console import Console, DeadStream, JobDetail, JobRow, Overview
from services.api.deps import RunnerDep, read_upload, require_admin
from services.api.schemas import Cursor, EntryId, JobId
from services.errors import InvalidParameter, ServiceUnavailable
from services.evaluation.quality import Degradation
from services.evaluation.references import MAX_REFERENCES, bundled_references
from services.evaluation.report import EvalReport, markdown, plot
from services.evaluation.run import evaluate
from services.evaluation.service import candidates, service_restore, uploaded_references
from services.jobs.models import JobStatus

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class JobTablePublic(BaseModel):
    jobs: list[JobRow]
    next_cursor: float | None


class DeadLettersPublic(BaseModel):
    work: list[dict[str, str]]
    webhooks: list[dict[str, str]]


class EvalPublic(BaseModel):
    """A quality report: its numbers, its markdown, and its plot as base64 PNG."""

    report: EvalReport
    markdown: str
    plot_png: str


def get_console(request: Request) -> Console:
    console: Console | None = getattr(request.app.state, "console", None)
    if console is None:
        raise ServiceUnavailable("the operator view needs the job store (Redis)")
    return console


ConsoleDep = Annotated[Console, Depends(get_console)]


@router.get("/v1/admin/overview")
async def read_overview(
    console: ConsoleDep, minutes: Annotated[int, Query(ge=1, le=90)] = 60
) -> Overview:
    """Deployments, replicas, queue, per-minute series, latency, cost, recent errors."""
    return await console.overview(minutes)


@router.get("/v1/admin/jobs")
async def read_all_jobs(
    console: ConsoleDep,
    status: JobStatus | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobTablePublic:
    """Every tenant's jobs, newest first, optionally of one status."""
    rows, next_cursor = await console.list_jobs(status, cursor, limit)
    return JobTablePublic(jobs=rows, next_cursor=next_cursor)


@router.get("/v1/admin/jobs/{job_id}")
async def read_any_job(job_id: JobId, console: ConsoleDep) -> JobDetail:
    """One job of any tenant, with items, errors, timings and trace ids."""
    return await console.job(job_id)


@router.get("/v1/admin/dead-letters")
async def read_dead_letters(console: ConsoleDep) -> DeadLettersPublic:
    """Items and webhook events that ran out of deliveries, with their reasons."""
    return DeadLettersPublic(**await console.dead_letters())


@router.post("/v1/admin/dead-letters/{stream}/{entry_id}/retry")
async def retry_dead_letter(
    stream: DeadStream,
    entry_id: EntryId,
    console: ConsoleDep,
) -> dict[str, str]:
    """Run a dead-lettered item again (its job re-opens) or re-send a webhook event."""
    return await console.retry(stream, entry_id)


@router.post("/v1/admin/eval")
async def create_eval(
    runner: RunnerDep,
    models: Annotated[list[str], Form(description="Models to score (repeat the field).")],
    images: Annotated[
        list[UploadFile] | None,
        File(description="Reference images (default: scikit-image's bundled set)."),
    ] = None,
    max_side: Annotated[
        int, Form(ge=16, le=2048, description="References shrunk to this longer side.")
    ] = 256,
    noise_sigma: Annotated[
        float, Form(ge=0, le=100, description="Gaussian noise after the downscale (0-255).")
    ] = 0.0,
    jpeg_quality: Annotated[
        int | None, Form(ge=1, le=100, description="JPEG the degraded input at it.")
    ] = None,
    seed: Annotated[int, Form(ge=0, description="The noise's seed.")] = 0,
) -> EvalPublic:
    """Degrade reference images by each model's factor, run them through the service one
    at a time, and report PSNR, SSIM, seconds and cost per image, with a plot."""
    context = runner.context
    chosen = candidates(models, context)  # every model checked before any image runs
    if images:
        if len(images) > MAX_REFERENCES:
            raise InvalidParameter(f"at most {MAX_REFERENCES} reference images",
                                   param="images")  # fmt: skip
        uploads = [(upload.filename or "", await read_upload(upload, context.settings))
                   for upload in images]  # fmt: skip
        references = await asyncio.to_thread(uploaded_references, uploads, context, max_side)
    else:
        references = await asyncio.to_thread(bundled_references, max_side)
    report = await evaluate(
        chosen, references, Degradation(noise_sigma=noise_sigma, jpeg_quality=jpeg_quality,
                                        seed=seed),
        service_restore(context, runner.backend), source="uploaded" if images else "scikit-image",
        max_side=max_side, gpu_hour_price_usd=context.settings.gpu_hour_price_usd,
    )  # fmt: skip
    picture = base64.b64encode(await asyncio.to_thread(plot, report)).decode()
    return EvalPublic(report=report, markdown=markdown(report), plot_png=picture)
