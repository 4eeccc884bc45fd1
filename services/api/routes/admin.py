"""``/v1/admin``: the operator's data behind ``/dashboard`` (an admin key when keys are
on): the overview, every tenant's jobs, dead letters and their retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.admin.console import Console, DeadStream, JobDetail, JobRow, Overview
from services.api.deps import require_admin
from services.api.schemas import Cursor, EntryId, JobId
from services.errors import ServiceUnavailable
from services.jobs.models import JobStatus

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class JobTablePublic(BaseModel):
    jobs: list[JobRow]
    next_cursor: float | None


class DeadLettersPublic(BaseModel):
    work: list[dict[str, str]]
    webhooks: list[dict[str, str]]


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
