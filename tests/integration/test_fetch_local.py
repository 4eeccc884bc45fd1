"""The SSRF-guarded fetcher's allowed path against a local HTTP server: a test policy
admits loopback (production keeps the public-only policy)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.errors import InvalidParameter
from services.net.fetch import SafeFetcher, UrlRefused

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1/elsewhere")
            self.end_headers()
            return
        body = b"x" * (5000 if self.path == "/big" else 100)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def local_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def loopback_allowed() -> SafeFetcher:
    return SafeFetcher(max_bytes=1000, allow_http=True, policy=lambda a: a.is_loopback)


def test_allowed_fetch_returns_body_and_type(local_url: str) -> None:
    body, content_type = asyncio.run(loopback_allowed().get(f"{local_url}/ok"))
    assert body == b"x" * 100 and content_type == "image/png"


def test_redirects_are_not_followed(local_url: str) -> None:
    with pytest.raises(UrlRefused, match="redirects are not followed"):
        asyncio.run(loopback_allowed().get(f"{local_url}/redirect"))


def test_bodies_are_capped(local_url: str) -> None:
    with pytest.raises(UrlRefused, match="larger than 1000 bytes"):
        asyncio.run(loopback_allowed().get(f"{local_url}/big"))


def test_https_only_by_default(local_url: str) -> None:
    with pytest.raises(InvalidParameter, match="https"):
        asyncio.run(SafeFetcher(max_bytes=10).get(f"{local_url}/ok"))
