"""s3rver (npm, installed in tests/tools by `make test`): an S3 HTTP server that, unlike
moto, refuses a presigned URL once its X-Amz-Expires has passed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.utils.redis_server import free_port

BINARY = Path(__file__).parents[1] / "tools" / "node_modules" / ".bin" / "s3rver"
BUCKETS = ("pixserve-inputs", "pixserve-outputs", "pixserve-models")
CREDENTIALS = {"s3_access_key_id": "S3RVER", "s3_secret_access_key": "S3RVER"}  # its account


@contextmanager
def s3rver(directory: Path) -> Iterator[str]:
    """A running s3rver with the platform's buckets; yields its endpoint URL."""
    assert BINARY.exists() and shutil.which("node"), "s3rver is missing: run `make setup-tests`"
    port = free_port()
    buckets = [arg for bucket in BUCKETS for arg in ("--configure-bucket", bucket)]
    process = subprocess.Popen(
        [str(BINARY), "-d", str(directory), "-a", "127.0.0.1", "-p", str(port), "-s", *buckets],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "s3rver did not start in 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
