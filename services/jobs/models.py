"""The job envelope: one shape for REST, SSE, webhooks and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, computed_field, field_validator


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"
    CANCELED = "canceled"
    EXPIRED = "expired"


class ItemStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_ITEM = {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELED}
TERMINAL_JOB = {
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.PARTIAL,
    JobStatus.CANCELED,
    JobStatus.EXPIRED,
}


INTERNAL = {"input", "traceparent", "output_key", "lease"}  # fields clients never see
WEBHOOK_EVENTS = ("start", "item", "completed")  # a job's first item started, each ended, all


def iso(seconds: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds (``2026-12-05T03:10:42.123Z``)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ItemProgress(BaseModel):
    """How far a running item has got: tiles of an upscale, steps of a generation."""

    step: int
    steps: int
    unit: str


class _RunTimes(BaseModel):
    """A job's or an item's start and end as ISO 8601 beside the Unix seconds."""

    if TYPE_CHECKING:  # the fields of the models below (declared there, in their place)
        started_at: float | None
        finished_at: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def started_at_iso(self) -> str | None:
        return iso(self.started_at)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def finished_at_iso(self) -> str | None:
        return iso(self.finished_at)


class ItemPublic(_RunTimes):
    """One input of a job and what became of it, as clients see it."""

    index: int
    status: ItemStatus = ItemStatus.QUEUED
    name: str | None = None  # what the client called it: the upload's filename, the URL
    output_url: str | None = None
    preview_url: str | None = None  # a mesh's PNG render
    texts: dict[str, Any] | None = None  # captions, tags, a generation's seed, by step
    error: str | None = None
    attempts: int = 0
    progress: ItemProgress | None = None  # while it runs, as its replica last reported
    started_at: float | None = None
    finished_at: float | None = None

    @field_validator("texts", mode="before")
    @classmethod
    def _parse_texts(cls, value: object) -> object:
        """The job store keeps texts as JSON text (its Lua would turn ``[]`` into ``{}``)."""
        return json.loads(value) if isinstance(value, str) else value


class Item(ItemPublic):
    """An item as stored: also where its input and output live and the trace it
    continues, which the envelope leaves out."""

    input: str
    traceparent: str | None = None  # the submission's trace; the item's work continues it
    output_key: str | None = None
    lease: str | None = None  # the delivery that holds it while running (fencing token)

    def public(self) -> ItemPublic:
        """The item as clients see it (envelope, webhooks): no storage keys or trace."""
        return ItemPublic.model_validate(self.model_dump(exclude=INTERNAL))


class Progress(BaseModel):
    done: int = 0
    failed: int = 0
    total: int


class JobPublic(_RunTimes):
    """The envelope: status, times, the task, items, progress, metrics."""

    id: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float
    task: dict[str, Any] = Field(description="The task spec as submitted, defaults filled.")
    progress: Progress
    items: Sequence[ItemPublic] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=lambda: ["completed"])
    queue_position: int | None = Field(
        default=None, description="Work items ahead of this job's first queued one."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def created_at_iso(self) -> str:
        return str(iso(self.created_at))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def expires_at_iso(self) -> str:
        return str(iso(self.expires_at))


class Job(JobPublic):
    """A job as stored, its items with their internals, and its first item's work queue
    entry (where its queue position counts from)."""

    items: list[Item] = Field(default_factory=list)
    work_entry: str | None = Field(default=None, exclude=True)

    def public(self) -> JobPublic:
        """The envelope clients get (REST, SSE, webhooks): no storage keys or traces."""
        return JobPublic.model_validate(self.model_dump(exclude={"items": {"__all__": INTERNAL}}))
