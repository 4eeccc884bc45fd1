"""Replica logs are JSON, one object a line, through Serve's ``logging_config``: a
refused request is logged once by the Ingress with its class, status, request id and
trace id; a failed job item is logged by the Dispatcher with its job id and index."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def log_records(deployment: str, until: Any, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The JSON records of ``deployment``'s replicas matching ``until``, in every app
    (apps sharing the main app's Redis may run its job items)."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    deadline = time.monotonic() + timeout_s
    while True:
        found = []
        for path in Path(get_serve_logs_dir()).glob(f"replica_pixserve*_{deployment}_*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if until(record):
                        found.append(record)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_refused_request_is_logged_once_with_its_class(client: httpx.Client) -> None:
    response = client.post("/v1/upscale", files={"image": ("x.png", b"not an image")})
    assert response.status_code == 400
    trace_id = response.headers["X-Trace-Id"]
    records = log_records("Ingress", lambda r: r.get("trace_id") == trace_id
                          and r.get("error_class"))  # fmt: skip
    assert len(records) == 1, records
    record = records[0]
    assert record["error_class"] == "invalid_image" and record["status"] == 400
    assert record["levelname"] == "INFO" and record["request_id"]
    assert record["deployment"].endswith("Ingress") and record["replica"]


def test_a_failed_job_item_is_logged_with_its_job_and_index(client: httpx.Client) -> None:
    job = submit(client, [encode(astronaut(16)), b"not an image at all"]).json()
    assert wait(client, job["id"])["status"] == "partial"
    records = log_records("Dispatcher", lambda r: r.get("job") == job["id"])
    failed = [r for r in records if r.get("error_class") == "invalid_image"]
    assert len(failed) == 1 and failed[0]["item"] == 1, records
    assert failed[0]["trace_id"]  # the item's span continues the submission's trace
