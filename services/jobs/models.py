"""The job envelope: one shape for REST, SSE, webhooks and the CLI."""

from __future__ import annotations

import json
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


class Item(BaseModel):
    """One input of a job and what became of it."""

    index: int
    status: ItemStatus = ItemStatus.QUEUED
    input: str
    name: str | None = None  # what the client called it: the upload's filename, the URL
    traceparent: str | None = None  # the submission's trace; the item's work continues it
    output_key: str | None = None
    output_url: str | None = None
    texts: dict[str, Any] | None = None  # what a preset's caption steps said, by step id
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @field_validator("texts", mode="before")
    @classmethod
    def _parse_texts(cls, value: object) -> object:
        """The job store keeps texts as JSON text (its Lua would turn ``[]`` into ``{}``)."""
        return json.loads(value) if isinstance(value, str) else value


class Progress(BaseModel):
    done: int = 0
    failed: int = 0
    total: int


class Job(BaseModel):
    """The envelope: status, times, input summary, items, progress, metrics."""

    id: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float
    pipeline: dict[str, Any]
    progress: Progress
    items: list[Item] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=lambda: ["completed"])
