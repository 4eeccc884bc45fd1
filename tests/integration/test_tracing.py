"""Traces across the graph, read from the spans Serve's default exporter writes per
replica: a client's traceparent is continued through the ingress and the Upscaler
with no orphan span, the trace id comes back in X-Trace-Id, and a job item's work
continues its submission's trace in the Dispatcher; the OTLP exporter the chart uses
delivers to a collector endpoint."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from deployments.tracing import otlp_exporter
from tests.integration.conftest import HOOKS_DB, on_database
from tests.integration.test_api_keys import create_key
from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.receiver import Receiver
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CLIENT_SPAN = "b7ad6b7169203331"


def spans_of(
    trace_id: str, deployments: set[str], timeout_s: float = 30,
    until: Callable[[list[dict[str, Any]]], bool] = lambda spans: True,
) -> list[dict[str, Any]]:  # fmt: skip
    """The spans of ``trace_id`` once every named deployment has written some (and
    ``until`` holds: spans of one request may leave in several export batches)."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    deadline = time.monotonic() + timeout_s
    while True:
        found = []
        for path in Path(get_serve_logs_dir(), "spans").glob("replica_pixserve*_tracing.json"):
            deployment = path.name.split("_")[2]  # replica_<app>_<deployment>_<id>_tracing
            # (apps sharing the main app's Redis may run its job items: read them all)
            for span in _objects(path.read_text()):
                if span["context"]["trace_id"] == f"0x{trace_id}":
                    found.append({**span, "deployment": deployment})
        complete = {s["deployment"] for s in found} >= deployments and until(found)
        if complete or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def batches_linked_to(trace_id: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """``pixserve.batch`` spans (their own traces) with a link into ``trace_id``."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            span
            for path in Path(get_serve_logs_dir(), "spans").glob("replica_pixserve*Upscaler*")
            for span in _objects(path.read_text())
            if span["name"] == "pixserve.batch"
            and any(link["context"]["trace_id"] == f"0x{trace_id}" for link in span["links"])
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _objects(text: str) -> list[dict[str, Any]]:
    """The spans of a file Serve's exporter appends to: each an indented JSON object
    starting at a line's first column. A span still being written, or two written at
    once from two threads, is skipped, not the rest of the file."""
    decoder, objects = json.JSONDecoder(), []
    for chunk in re.split(r"^(?=\{)", text, flags=re.MULTILINE):
        try:
            found, _ = decoder.raw_decode(chunk.strip() or "null")
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            objects.append(found)
    return objects


def assert_connected(spans: list[dict[str, Any]]) -> None:
    """Every span's parent is another span of the trace or the client's span."""
    ids = {span["context"]["span_id"] for span in spans} | {f"0x{CLIENT_SPAN}"}
    orphans = [s["name"] for s in spans if s["parent_id"] not in ids]
    assert not orphans, orphans


def test_a_request_is_one_connected_trace(client: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    files = {"image": ("a.png", encode(astronaut(40)), "image/png")}
    response = client.post("/v1/upscale", files=files, data={"model": TINY_COMPACT},
                           headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"})  # fmt: skip
    assert response.status_code == 200 and response.headers["X-Trace-Id"] == trace_id
    spans = spans_of(trace_id, {"Ingress", "Upscaler"})
    assert {"Ingress", "Upscaler"} <= {s["deployment"] for s in spans}
    assert_connected(spans)
    names = {s["name"] for s in spans}
    assert {"pixserve.upscale", "pixserve.decode", "pixserve.model", "pixserve.encode"} <= names
    # the batched forward is its own span, linked to each request it served
    (batch,) = batches_linked_to(trace_id)
    assert batch["attributes"]["pixserve.batch_requests"] >= 1
    assert batch["attributes"]["pixserve.batch_tiles"] >= 4
    assert batch["attributes"]["pixserve.device"] == "cpu"
    assert batch["attributes"]["pixserve.replica"]
    linked = {link["context"]["span_id"] for link in batch["links"]}
    assert linked & {s["context"]["span_id"] for s in spans if s["deployment"] == "Ingress"}
    (upscale,) = [s for s in spans if s["name"] == "pixserve.upscale"]
    assert upscale["attributes"] == {
        "pixserve.model": TINY_COMPACT, "pixserve.tiles": 4,
        "pixserve.input_size": "40x40", "pixserve.output_size": "80x80",
    }  # fmt: skip


def test_a_job_item_continues_the_submission_trace(client: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}
    job = submit(client, [encode(astronaut(16))], headers=headers).json()
    done = wait(client, job["id"])
    assert done["status"] == "succeeded" and "traceparent" not in done["items"][0]
    spans = spans_of(trace_id, {"Ingress", "Dispatcher", "Upscaler"})
    assert {"Ingress", "Dispatcher", "Upscaler"} <= {s["deployment"] for s in spans}
    assert_connected(spans)
    (item,) = [s for s in spans if s["name"] == "pixserve.job_item"]
    assert item["deployment"] == "Dispatcher"
    assert item["attributes"]["pixserve.job_id"] == job["id"]
    assert item["attributes"]["pixserve.item"] == 0
    # Redis and object-store calls are client spans of the same trace
    by_name = {(s["deployment"], s["name"]): s for s in spans}
    submit_tx = by_name["Ingress", "redis MULTI"]
    assert submit_tx["kind"] == "SpanKind.CLIENT"
    assert "XADD" in submit_tx["attributes"]["db.redis.commands"]
    assert ("Dispatcher", "redis EVALSHA") in by_name  # start/finish the item, atomically
    stored = by_name["Dispatcher", "file put"]
    assert stored["attributes"]["storage.area"] == "outputs"
    assert stored["attributes"]["storage.key"].startswith(f"jobs/{job['id']}/")
    assert stored["parent_id"] in {s["context"]["span_id"] for s in spans
                                   if s["name"] == "pixserve.store_output"}  # fmt: skip


def test_s3_calls_are_spans_of_the_job_trace(client: httpx.Client, redis_url: str) -> None:
    """On the S3-backed app: the upload, the input read and the output write are S3
    client spans in the submission's trace."""
    trace_id = secrets.token_hex(16)
    token = create_key(on_database(redis_url, HOOKS_DB), "tracing")
    headers = {"Authorization": f"Bearer {token}"}
    traced = {**headers, "traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}
    job = submit(client, [encode(astronaut(16))], "/hooks", headers=traced).json()
    assert wait(client, job["id"], "/hooks", headers=headers)["status"] == "succeeded"
    expected = {("Ingress", "put", "inputs"), ("Dispatcher", "get", "inputs"),
                ("Dispatcher", "put", "outputs")}  # fmt: skip
    spans = spans_of(trace_id, {"Ingress", "Dispatcher"}, until=lambda s: expected <= _s3(s))
    assert_connected(spans)
    assert expected <= _s3(spans), _dispatcher_files("pixserve-hooks", trace_id)


def _dispatcher_files(app: str, trace_id: str) -> dict[str, object]:
    """What each of an app's Dispatcher span files holds: to tell a missing span from
    a replica that wrote nothing when this test fails."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    files: dict[str, object] = {}
    for path in Path(get_serve_logs_dir(), "spans").glob(f"replica_{app}_Dispatcher_*"):
        spans = _objects(path.read_text())
        files[path.name] = {
            "bytes": path.stat().st_size, "spans": len(spans),
            "last_end": max((s["end_time"] for s in spans), default=None),
            "of_trace": [s["name"] for s in spans
                         if s["context"]["trace_id"] == f"0x{trace_id}"],
        }  # fmt: skip
    return files


def test_replicas_started_after_a_controller_restart_still_trace(client: httpx.Client) -> None:
    """Serve 2.60 keeps a deployed config's tracing only in its controller's memory; the
    platform's deploy also gives it to the controller's constructor, so a controller
    that crashed (Ray's memory monitor picks it on a loaded node) and came back still
    starts traced replicas."""
    import ray
    from ray import serve

    ray.kill(ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve"), no_restart=False)
    deadline = time.monotonic() + 120
    while "pixserve-missing" not in _applications(serve):
        assert time.monotonic() < deadline, "the Serve controller did not come back"
        time.sleep(0.5)
    prefix = "SERVE_REPLICA::pixserve-missing#Codec#"
    (old,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
              if a["name"].startswith(prefix)]  # fmt: skip
    ray.kill(ray.get_actor(old["name"], namespace=old["namespace"]), no_restart=True)
    files = {"image": ("a.png", encode(astronaut(24)), "image/png")}
    while True:  # the restarted controller replaces the replica within seconds
        trace_id = secrets.token_hex(16)
        traced = {"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}
        response = client.post("/missing/v1/convert", files=files, data={"format": "webp"},
                               headers=traced)  # fmt: skip
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(1)
    spans = spans_of(trace_id, {"Ingress", "Codec"})
    assert {"Ingress", "Codec"} <= {s["deployment"] for s in spans}
    assert_connected(spans)


def _applications(serve: Any) -> set[str]:
    try:
        return set(serve.status().applications)
    except Exception:  # the controller is still restarting
        return set()


def _s3(spans: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(s["deployment"], s["attributes"]["storage.operation"], s["attributes"]["storage.area"])
            for s in spans if s["name"].startswith("s3 ")}  # fmt: skip


def test_the_otlp_exporter_posts_spans_to_the_collector_endpoint(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the chart configures (deployments.tracing:otlp_exporter with the standard
    endpoint variable) delivers OTLP/HTTP protobuf to the collector's traces path."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.removesuffix("/hook"))
    provider = TracerProvider()
    for processor in otlp_exporter("unused.json"):
        provider.add_span_processor(processor)
    with provider.get_tracer("test").start_as_current_span("pixserve.test-span"):
        pass
    assert provider.force_flush(10_000)
    (headers, body), *_ = receiver.calls
    assert headers["content-type"] == "application/x-protobuf"
    assert b"pixserve.test-span" in body
    provider.shutdown()


def test_an_error_names_its_class_on_the_span(client: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    response = client.post("/v1/upscale", files={"image": ("a.png", b"junk", "image/png")},
                           headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"})  # fmt: skip
    assert response.status_code == 400 and response.headers["X-Trace-Id"] == trace_id
    spans = spans_of(trace_id, {"Ingress"})
    classes = {s["attributes"].get("pixserve.error_class") for s in spans}
    assert "invalid_image" in classes
