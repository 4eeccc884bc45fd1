"""Concurrent requests meet in one forward pass: tiles of several images batched together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_one_forward_pass_serves_several_requests(serve_url: str) -> None:
    from ray import serve

    images = [encode(astronaut(40 + 4 * i)) for i in range(8)]

    def send(data: bytes) -> int:
        files = {"image": ("a.png", data, "image/png")}
        return httpx.post(f"{serve_url}/v1/upscale", files=files, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(send, images)) == [200] * 8
    handle = serve.get_deployment_handle("Upscaler", app_name="pixserve")
    passes = handle.forward_passes.remote().result(timeout_s=30)
    shared = [p for p in passes if len(set(p.request_ids)) >= 2]
    assert shared, f"no forward pass held tiles of two requests: {passes}"
    assert max(len(set(p.request_ids)) for p in shared) >= 2
