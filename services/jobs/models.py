"""The job envelope: one shape for REST, SSE, webhooks and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator


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


class ItemPublic(BaseModel):
    """One input of a job and what became of it, as clients see it."""

    index: int
    status: ItemStatus = ItemStatus.QUEUED
    name: str | None = None  # what the client called it: the upload's filename, the URL
    output_url: str | None = None
    texts: dict[str, Any] | None = None  # captions, tags, a generation's seed, by step
    error: str | None = None
    attempts: int = 0
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


class JobPublic(BaseModel):
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


class Job(JobPublic):
    """A job as stored, its items with their internals."""

    items: list[Item] = Field(default_factory=list)

    def public(self) -> JobPublic:
        """The envelope clients get (REST, SSE, webhooks): no storage keys or traces."""
        return JobPublic.model_validate(self.model_dump(exclude={"items": {"__all__": INTERNAL}}))
