"""No CPU-heavy step runs on an async replica's event loop: while a large upscale is
decoded, tiled, run, stitched and encoded, the same Ingress keeps answering other
requests, and the Codec keeps converting."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_other_requests_are_answered_during_a_large_upscale(
    client: httpx.Client, serve_url: str
) -> None:
    # 960 -> 1920 px: 900 tiles of 32 px through a cheap model, so most of the time is
    # the pipeline's own work (decode, tiling, stitching, transfer, encode)
    big = encode(astronaut(960), "JPEG", quality=90)
    small = encode(astronaut(16))
    finished = threading.Event()
    outcome: dict[str, int] = {}

    def upscale() -> None:
        files = {"image": ("big.jpg", big, "image/jpeg")}
        form = {"model": TINY_COMPACT, "format": "png"}
        response = httpx.post(f"{serve_url}/v1/upscale", files=files, data=form, timeout=280)
        outcome["status"] = response.status_code
        finished.set()

    worker = threading.Thread(target=upscale)
    worker.start()
    answered_meanwhile = []
    while not finished.is_set():
        health = client.get("/healthz", timeout=60)
        files = {"image": ("s.png", small, "image/png")}
        converted = client.post("/v1/convert", files=files, data={"format": "webp"}, timeout=60)
        if not finished.is_set():
            answered_meanwhile.append((health.status_code, converted.status_code))
    worker.join()
    assert outcome["status"] == 200
    assert len(answered_meanwhile) >= 3, answered_meanwhile
    assert set(answered_meanwhile) == {(200, 200)}
