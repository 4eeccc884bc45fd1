"""OpenTelemetry spans for the platform's own steps, inside the traces Ray Serve starts.

Serve (with its ``tracing_config`` on) opens a span per request in every replica, takes
a client's W3C ``traceparent`` and carries the context through handle calls; it is the
current OpenTelemetry context while our code runs, so spans made here nest under it.
Without a tracer provider (tracing off) every call is a cheap no-op. Job items carry
their submission's ``traceparent``, so each item's work continues the submit trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

tracer = trace.get_tracer("pixserve")
_propagator = TraceContextTextMapPropagator()


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits, or None outside a sampled trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (to continue the trace later)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Make ``traceparent`` the parent of spans started inside the block."""
    if not traceparent:
        yield
        return
    token = context.attach(_propagator.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def batch_span(
    name: str, traceparents: list[str | None], **attributes: AttributeValue
) -> Iterator[None]:
    """A span for work done once for many requests (a ``@serve.batch`` call): its own
    trace, linked to each request's span, since it has no single parent."""
    links = []
    for traceparent in traceparents:
        if traceparent:
            parent = trace.get_current_span(_propagator.extract({"traceparent": traceparent}))
            links.append(trace.Link(parent.get_span_context()))
    prefixed = {f"pixserve.{key}": value for key, value in attributes.items()}
    with tracer.start_as_current_span(name, context=context.Context(), links=links,
                                      attributes=prefixed):  # fmt: skip
        yield


def annotate(**attributes: AttributeValue) -> None:
    """Add attributes to the current span (the operator's questions: model, sizes...)."""
    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(f"pixserve.{key}", value)
