"""What every log record carries besides its message: the trace id of the span it was
written in, and the job and item a dispatcher works on. Serve's JSON log encoding
(``logging_config`` in serve_config.yaml) adds the request id, route, application,
deployment and replica; every extra attribute a record has becomes a JSON field.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from services.telemetry.tracing import current_trace_id

_job: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "pixserve_job_item", default=None
)


@contextmanager
def job_item(job_id: str, index: int) -> Iterator[None]:
    """Records written inside carry ``job`` (the job id) and ``item`` (Ray's JSON logs
    keep ``job_id`` for the Ray job's own id)."""
    token = _job.set((job_id, index))
    try:
        yield
    finally:
        _job.reset(token)


def install_record_context() -> None:
    """Add ``trace_id`` and the job item (``job``, ``item``) to every record created in
    this process, whichever logger writes it (idempotent)."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "pixserve_context", False):
        return

    def with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        trace_id = current_trace_id()
        if trace_id:
            record.trace_id = trace_id
        current = _job.get()
        if current is not None:
            record.job, record.item = current
        return record

    with_context.pixserve_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(with_context)
