"""Result URLs honour ``presign_ttl_s``: a job's output URL, minted when the job is read,
serves the output until its lifetime is over and is refused after (s3rver, which
enforces expiry as S3 does); reading the job again mints a fresh URL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.config import Settings
from services.jobs.models import JobStatus
from services.jobs.service import JobRequest
from services.jobs.wiring import build_dispatcher
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.tasks import UpscaleTask
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import redis_server
from tests.utils.s3rver import CREDENTIALS, s3rver
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
TTL_S = 3


def test_output_urls_expire_after_presign_ttl(
    tmp_path: Path, tiny_settings: Settings, tiny_engine: UpscaleEngine
) -> None:
    async def scenario(redis_url: str, endpoint: str) -> None:
        settings = Settings.model_validate({
            **tiny_settings.model_dump(), "redis_url": redis_url, "storage_url": "s3://tenant",
            "s3_endpoint_url": endpoint, "presign_ttl_s": TTL_S, **CREDENTIALS,
        })  # fmt: skip
        dispatcher, jobs = build_dispatcher(settings, EngineBackend(tiny_engine))
        pipeline = UpscaleTask(model=TINY_COMPACT, format="png")
        job = await jobs.submit("owner", JobRequest(pipeline, [("a.png", encode(astronaut(16)))],
                                                    [], None), None)  # fmt: skip
        while await dispatcher.run_once("d1", block_ms=100):
            pass
        minted = time.monotonic()
        done = await jobs.view(job.id, "owner")
        assert done.status == JobStatus.SUCCEEDED
        url = str(done.items[0].output_url)
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(TTL_S)]
        async with httpx.AsyncClient() as client:
            fresh = await client.get(url)
            assert fresh.status_code == 200 and fresh.content.startswith(b"\x89PNG")
            await asyncio.sleep(max(0.0, minted + TTL_S + 1.5 - time.monotonic()))
            expired = await client.get(url)
            assert expired.status_code == 403 and b"Request has expired" in expired.content
            again = await jobs.view(job.id, "owner")  # every read mints a new URL
            renewed = await client.get(str(again.items[0].output_url))
            assert renewed.status_code == 200 and renewed.content == fresh.content
        await jobs.store.redis.aclose()

    with redis_server(tmp_path / "redis") as redis_url, s3rver(tmp_path / "s3") as endpoint:
        asyncio.run(scenario(redis_url, endpoint))
