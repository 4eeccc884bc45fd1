"""Span exporters for Ray Serve's ``tracing_config`` (``exporter_import_path``).

Serve calls the named function in every replica and installs the span processors it
returns. ``otlp_exporter`` sends spans over OTLP/HTTP to the endpoint in the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` variable (the chart points it at its collector);
without this, Serve's default exporter writes JSON files under the Serve logs dir.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

OTLP_EXPORTER = "deployments.tracing:otlp_exporter"


def otlp_exporter(tracing_file_name: str) -> list[SpanProcessor]:
    """Batched OTLP export (the file name Serve passes is for file exporters)."""
    return [BatchSpanProcessor(OTLPSpanExporter())]


def tracing_config(mode: str, sampling_ratio: float) -> dict[str, object]:
    """Serve's ``tracing_config`` for ``off``, ``file`` (Serve's JSON files) or ``otlp``."""
    if mode == "off":
        return {"enabled": False}
    exporter = OTLP_EXPORTER if mode == "otlp" else ""
    return {"enabled": True, "exporter_import_path": exporter, "sampling_ratio": sampling_ratio}
