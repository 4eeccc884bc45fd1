"""API keys against real Redis and the real Serve app: 401s, keys that work, revocation,
rate limits with Retry-After, and the ``pixserve keys`` commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.auth.keys import ApiKeyStore
from services.config import Settings
from services.redis_client import connect_redis
from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def pixserve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from deployments.cli import main; main()", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, **env},
    )  # fmt: skip


def create_key(redis_url: str, name: str, rate: int | None = None, admin: bool = False) -> str:
    async def create() -> str:
        redis = connect_redis(Settings(redis_url=redis_url))
        try:
            token, _ = await ApiKeyStore(redis).create(name, rate, admin)
            return token
        finally:
            await redis.aclose()

    return asyncio.run(create())


def upscale(client: httpx.Client, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    files = {"image": ("a.png", encode(astronaut(8)), "image/png")}
    return client.post("/keyed/v1/upscale", files=files, headers=headers)


def test_requests_without_a_valid_key_get_401(client: httpx.Client) -> None:
    missing = upscale(client)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthorized"
    assert upscale(client, "not-a-key").json()["error"]["message"].startswith("malformed")
    assert upscale(client, "pxs_00000000_guess").json()["error"]["message"] == "unknown API key"
    assert client.get("/keyed/v1/models").status_code == 401


def test_probes_and_docs_stay_open(client: httpx.Client) -> None:
    assert client.get("/keyed/healthz").status_code == 200
    assert client.get("/keyed/readyz").status_code == 200


def test_a_key_works_until_revoked(client: httpx.Client, redis_url: str) -> None:
    token = create_key(redis_url, "app-a")
    assert upscale(client, token).status_code == 200
    prefix = token.split("_")[1]
    result = pixserve("keys", "revoke", prefix, PIXSERVE_REDIS_URL=redis_url)
    assert result.returncode == 0 and f"revoked key {prefix}" in result.stdout
    revoked = upscale(client, token)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


def test_rate_limit_answers_429_with_retry_after(client: httpx.Client, redis_url: str) -> None:
    token = create_key(redis_url, "bursty")  # burst 3, refill 6/min in this app
    statuses = [client.get("/keyed/v1/models", headers={"Authorization": f"Bearer {token}"})
                for _ in range(4)]  # fmt: skip
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    limited = statuses[-1]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    other = create_key(redis_url, "other")  # buckets are per key
    assert (
        client.get("/keyed/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code
        == 200
    )


def test_keys_cli_and_keyed_upscale(serve_url: str, redis_url: str, tmp_path: Path) -> None:
    created = pixserve(
        "keys", "create", "cli-user", "--rate-limit", "120", PIXSERVE_REDIS_URL=redis_url
    )
    assert created.returncode == 0, created.stderr
    token = next(x for x in created.stdout.splitlines() if x.startswith("pxs_"))
    secret = next(x for x in created.stdout.splitlines() if x.startswith("whsec_"))
    prefix = token.split("_")[1]
    shown = pixserve("keys", "webhook-secret", prefix, PIXSERVE_REDIS_URL=redis_url)
    assert shown.stdout.strip() == secret
    rotated = pixserve("keys", "webhook-secret", prefix, "--rotate", PIXSERVE_REDIS_URL=redis_url)
    assert rotated.returncode == 0 and rotated.stdout.strip() not in ("", secret)
    unknown = pixserve("keys", "webhook-secret", "nope", PIXSERVE_REDIS_URL=redis_url)
    assert unknown.returncode == 1 and "no API key with prefix 'nope'" in unknown.stderr
    listing = pixserve("keys", "list", PIXSERVE_REDIS_URL=redis_url)
    line = next(x for x in listing.stdout.splitlines() if x.endswith("cli-user"))
    assert "active" in line and "120" in line and token not in listing.stdout
    image = tmp_path / "a.png"
    image.write_bytes(encode(astronaut(8)))
    url = f"{serve_url}/keyed"
    denied = pixserve("upscale", str(image), "--url", url)
    assert denied.returncode == 1 and "unauthorized" in denied.stderr
    allowed = pixserve("upscale", str(image), "--url", url, PIXSERVE_API_KEY=token)
    assert allowed.returncode == 0, allowed.stderr


def test_keys_cli_reports_unreachable_redis() -> None:
    result = pixserve("keys", "list", PIXSERVE_REDIS_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 1 and "cannot reach Redis" in result.stderr
