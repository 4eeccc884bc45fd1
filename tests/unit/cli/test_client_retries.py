"""The CLI's client against a real local HTTP server that answers 503/429 first: it
waits for the server's Retry-After and tries again where a repeat is safe, re-sending
streamed uploads whole; job submissions without an Idempotency-Key and 4xx are not
repeated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.cli.client import ClientError, PixserveClient

pytestmark = pytest.mark.timeout(60)


class Server:
    """Answers each request with the next planned (status, Retry-After), then 200 JSON;
    records (method, path, body length) per request."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, str]] = []
        self.seen: list[tuple[str, str, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append((self.command, self.path, length))
                status, retry_after = server.plan.pop(0) if server.plan else (200, "")
                body = json.dumps({"ok": True} if status < 400 else {
                    "error": {"code": "busy", "message": "try later"}}).encode()  # fmt: skip
                self.send_response(status)
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, *_: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.http.shutdown()


def test_a_read_waits_for_retry_after_and_succeeds(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.plan = [(503, "1"), (429, "1")]
    started = time.monotonic()
    assert PixserveClient(server.url).get_json("/v1/models") == {"ok": True}
    assert time.monotonic() - started >= 2  # one second per Retry-After
    assert [path for _, path, _ in server.seen] == ["/v1/models"] * 3
    assert capsys.readouterr().err.count("retrying in 1 s") == 2


def test_a_keyed_submission_is_sent_again_whole(server: Server, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG" + bytes(5000))
    server.plan = [(503, "0")]
    PixserveClient(server.url).submit_job([image], [], {"task": "upscale"}, "key-1")
    (_, _, first), (_, _, second) = server.seen
    assert first == second > 5000  # the streamed file went again from its start


def test_what_a_repeat_could_harm_or_not_fix_is_not_repeated(
    server: Server, tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    server.plan = [(503, "0")]
    with pytest.raises(ClientError, match="busy"):  # no key: a repeat could be a 2nd job
        PixserveClient(server.url).submit_job([image], [], {}, None)
    server.plan = [(400, "")]
    with pytest.raises(ClientError, match="busy"):
        PixserveClient(server.url).get_json("/v1/models")
    server.plan = [(503, "0")] * 3
    with pytest.raises(ClientError, match="busy"):  # retries run out
        PixserveClient(server.url, retries=2).get_json("/v1/models")
    assert len(server.seen) == 1 + 1 + 3
