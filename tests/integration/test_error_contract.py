"""The error contract, route by route: a hostile or careless client gets a 4xx JSON
error that names the problem, never a 500, a traceback or an internal detail, and a
503 only for what a retry fixes, with ``Retry-After``. Each class a probe of the
service found has its regression test here.

The API runs in-process over the fake model backend (tests/utils/fake_backend.py) with
a real redis-server and a file object store, so every route, jobs included, answers
as it does in the Serve app; the Serve app's own error paths (a replica's exception,
the body limit through the proxy) are covered in test_endpoints.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.api.app import create_api
from services.config import Settings
from services.jobs.wiring import build_job_service
from services.platform import DeploymentReadiness
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode
from tests.utils.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.timeout(300)

PNG = encode(astronaut(24))
# what no error message may carry: tracebacks, source paths, Ray internals, ANSI codes,
# object addresses, exception reprs of the server's libraries
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|/work/|/tmp/|site-packages|pid=|ip=|actor|Actor|\x1b\[|"
    r" at 0x[0-9a-f]+|RayTaskError|redis\.exceptions|Error \d+ connecting"
)
HOSTILE_IDS = ["abc:x", "a" * 32 + ":items", "a" * 33, "../../etc/passwd", "%00", "-1", "nan"]
HOSTILE_NUMBERS = ["nan", "inf", "-inf", "-1", "1e400", "x" * 300, ""]


def check_contract(response: httpx.Response) -> None:
    """Every non-2xx answer: 4xx (or a retryable 503 with Retry-After), the error
    envelope as JSON, a message free of internals."""
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code != 500, f"{where}: 500 {response.text[:300]}"
    if response.status_code < 400:
        return
    assert response.status_code < 500 or response.status_code == 503, where
    assert response.headers["content-type"].startswith("application/json"), where
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str) and error["message"], where
    assert not LEAKS.search(error["message"]), f"{where}: {error['message']}"
    if response.status_code == 503:
        assert response.headers.get("Retry-After", "").isdigit(), where


class CountingBackend(FakeBackend):
    """The fake backend, counting readiness reads (the cache's effect)."""

    def __init__(self) -> None:
        super().__init__()
        self.readiness_reads = 0

    async def readiness(self) -> dict[str, DeploymentReadiness]:
        self.readiness_reads += 1
        await asyncio.sleep(0.2)  # a deployment that takes a moment to answer
        return await super().readiness()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("contract-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def backend() -> CountingBackend:
    return CountingBackend()


@pytest.fixture(scope="module")
def client(
    redis: RedisServer, backend: CountingBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("contract-objects")
    settings = Settings(
        redis_url=redis.url, storage_url=f"file://{store}", max_upload_bytes=2_000_000,
        max_job_bytes=4_000_000, models=["x4plus", "x2plus"], default_model="x4plus",
        denoise_models=["scunet-color"], default_denoise_model="scunet-color",
        depth_model="depth-anything-v2-small", mesh_model="triposr", mesh_max_resolution=32,
    )  # fmt: skip
    app = create_api(settings, backend, build_job_service(settings, backend))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_route_answers_hostile_values_within_the_contract(client: TestClient) -> None:
    """Each documented operation with each path parameter, query value and body made
    hostile (schemathesis explores further against the Serve app: test_fuzz_api.py)."""
    paths = client.get("/openapi.json").json()["paths"]
    assert len(paths) > 20
    for path, operations in paths.items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            for value in HOSTILE_IDS:
                hostile = re.sub(r"{\w+}", value, path)
                check_contract(client.request(method, hostile))
            target = _concrete(path)
            for name in (p["name"] for p in parameters if p["in"] == "query"):
                for value in HOSTILE_NUMBERS:
                    check_contract(client.request(method, target, params={name: value}))
            for name in (p["name"] for p in parameters if p["in"] == "header"):
                check_contract(client.request(method, target, headers={name: "\x7f" * 300}))
            if "requestBody" in operation:
                check_contract(client.request(method, target, content=b"\x00garbage{"))
                check_contract(client.request(method, target, json={"image": [[[1e300]]]}))
                for field in ("image", "images"):
                    for data in (b"GIF89a", b"\x89PNG", b""):
                        files = {field: ("a.png", data)}
                        check_contract(client.request(method, target, files=files))


def _concrete(path: str) -> str:
    """A route path with plausible values: a well-formed unknown job id, index 0."""
    values = {"job_id": "0" * 32, "index": "0", "entry_id": "1-0", "stream": "work",
              "preset": "enhance", "name": "x4plus"}  # fmt: skip
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "x"), path)


def test_a_chunked_body_over_the_limit_is_refused_on_the_stream(client: TestClient) -> None:
    """No Content-Length: the limit counts the chunks as they arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(60):
            yield b"x" * 100_000  # 6 MB in all, over the 4 MB job limit
        yield b'"}'

    for path, kind in (("/v1/jobs", "multipart/form-data; boundary=b"),
                       ("/v1/chat/completions", "application/json"),
                       ("/v1/upscale", "multipart/form-data; boundary=b")):  # fmt: skip
        response = client.post(path, content=chunks(), headers={"content-type": kind})
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, (path, response.text)
        assert response.json()["error"]["code"] == "payload_too_large"
    assert client.post("/v1/upscale", files={"image": ("a.png", PNG)}).status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="services.api.app"):
        response = client.post("/v1/upscale", content=b"x" * 2_200_000,
                               headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]
    logged = [r for r in caplog.records if getattr(r, "status", None) == 413]
    assert [getattr(r, "error_class", None) for r in logged] == ["payload_too_large"]


def _jpeg(mode: str = "RGB", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (32, 24), (200, 30, 40) if mode == "RGB" else (0, 200, 200, 0)).save(
        buffer, "JPEG", **options
    )
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "avif"])
def test_a_cmyk_jpeg_converts_to_every_format_as_rgb(client: TestClient, fmt: str) -> None:
    response = client.post("/v1/convert", files={"image": ("a.jpg", _jpeg("CMYK"))},
                           data={"format": fmt})  # fmt: skip
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).mode in ("RGB", "RGBA")


def test_large_comments_and_exif_blocks_convert(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x010E] = "z" * 60_000  # ImageDescription
    gif = io.BytesIO()
    Image.new("P", (16, 16)).save(gif, "GIF", comment=b"y" * 60_000)
    for name, data in (("c.jpg", _jpeg(comment=b"x" * 60_000)), ("e.jpg", _jpeg(exif=exif)),
                       ("g.gif", gif.getvalue())):  # fmt: skip
        for fmt in ("png", "jpeg"):
            response = client.post("/v1/convert", files={"image": (name, data)},
                                   data={"format": fmt})  # fmt: skip
            assert response.status_code == 200, (name, fmt, response.text)


def test_metadata_is_stripped_on_every_path_unless_kept(client: TestClient) -> None:
    """Comments, GPS EXIF and XMP leave no trace in any output; keep_metadata keeps EXIF."""
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}  # GPS IFD: a location
    exif[0x010F] = "SecretCam"  # Make
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>'
    source = _jpeg(comment=b"secret-comment", exif=exif, xmp=xmp)
    secrets = (b"secret-comment", b"SecretCam", b"secret-xmp")
    runs = [("/v1/convert", {"format": fmt}) for fmt in ("jpeg", "png", "webp")]
    runs += [("/v1/upscale", {"scale": "1", "format": fmt}) for fmt in ("jpeg", "png", "webp")]
    runs += [("/v1/denoise", {"format": "jpeg"}), ("/v1/run/enhance", {})]
    for path, fields in runs:
        response = client.post(path, files={"image": ("a.jpg", source)}, data=fields)
        assert response.status_code == 200, (path, fields, response.text)
        assert not any(secret in response.content for secret in secrets), (path, fields)
    kept = client.post("/v1/convert", files={"image": ("a.jpg", source)},
                       data={"format": "jpeg", "keep_metadata": "true"})  # fmt: skip
    assert kept.status_code == 200 and b"SecretCam" in kept.content


def test_a_refused_format_behind_an_accepted_prefix_is_refused(client: TestClient) -> None:
    """A TIFF whose bytes 8-12 read WEBP (the WEBP signature's place) is not decoded as
    anything: the format's own decoder reads the header."""
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    disguised = b"XXXX" + tiff.getvalue()[4:8] + b"WEBP" + tiff.getvalue()[12:]
    response = client.post("/v1/convert", files={"image": ("a.webp", disguised)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "the data is not a valid WEBP file"


def test_values_that_reached_500s_are_named_4xx(client: TestClient, backend: FakeBackend) -> None:
    wide = encode(astronaut(16)[:, :1].repeat(4100, axis=1))  # 4100 px wide, x4 -> 16400
    before = len(backend.calls)
    response = client.post("/v1/upscale", files={"image": ("w.png", wide)},
                           data={"scale": "4", "format": "webp"})  # fmt: skip
    assert response.status_code == 413 and "16383" in response.json()["error"]["message"]
    assert len(backend.calls) == before, "refused before the model ran"
    for params, words in (('{"upscale": {"scale": 1e400}}', "out of range"),
                          ('{"upscale": {"scale": NaN}}', "not a number"),
                          ("[" * 5000 + "]" * 5000, "nested"),
                          ('{"a":' * 20 + "1" + "}" * 20, "nested")):  # fmt: skip
        response = client.post("/v1/run/enhance", files={"image": ("a.png", PNG)},
                               data={"params": params})  # fmt: skip
        assert response.status_code == 422, (params[:40], response.text)
        assert words in response.json()["error"]["message"]


def test_ids_are_checked_before_they_reach_a_key(client: TestClient) -> None:
    suffixed = "a" * 32 + ":items"
    for path in ("/v1/jobs/abc:x", f"/v1/jobs/{suffixed}", "/v1/jobs?cursor=nan",
                 "/v1/admin/jobs?cursor=inf", f"/v1/admin/jobs/{suffixed}"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_parameter"
    response = client.post("/v1/admin/dead-letters/work/zz/retry")
    assert response.status_code == 422 and "entry_id" in response.json()["error"]["message"]


def test_sse_refuses_a_malformed_last_event_id_and_is_not_buffered(client: TestClient) -> None:
    job = client.post("/v1/jobs", files=[("images", ("a.png", PNG))], data={"scale": "2"})
    assert job.status_code == 202, job.text
    events = f"/v1/jobs/{job.json()['id']}/events"
    response = client.get(events, headers={"Last-Event-ID": "garbage"})
    assert response.status_code == 422 and "last-event-id" in response.text.lower()
    with client.stream("GET", events, headers={"Last-Event-ID": "0-0"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"


def test_listings_and_probes_read_the_cache_not_the_deployments(
    client: TestClient, backend: CountingBackend
) -> None:
    """Many concurrent listings, probes and job submissions (whose weight check reads
    the deployments' state too) cost one readiness read per cache period: the Ingress
    keeps one cache for all of them."""
    client.get("/readyz")
    reads = backend.readiness_reads

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as burst_client:
            answers = await asyncio.gather(*(
                burst_client.post("/v1/jobs", files={"images": ("a.png", PNG)}) if n % 20 == 0
                else burst_client.get("/v1/models" if n % 4 else "/readyz") for n in range(200)
            ))  # fmt: skip
        return [answer.status_code for answer in answers]

    codes = client.portal.call(burst)  # type: ignore[union-attr]  # on the app's own loop
    assert sorted(set(codes)) == [200, 202], codes
    assert backend.readiness_reads - reads <= 2, "one read per period, not one per request"


def test_a_submission_reads_the_probes_cache(client: TestClient, backend: CountingBackend) -> None:
    """The job weight check and the probes share one cache: a submission right after a
    probe reads nothing more."""
    time.sleep(2.1)  # past the cache period: the probe reads afresh
    client.get("/readyz")
    reads = backend.readiness_reads
    assert client.post("/v1/jobs", files={"images": ("a.png", PNG)}).status_code == 202
    assert backend.readiness_reads == reads


def test_readyz_counts_the_job_store(client: TestClient, redis: RedisServer) -> None:
    """Redis down: not ready, and the job routes answer a retryable 503; back: ready."""
    assert client.get("/readyz").json()["job_store"] == {**_ok(), "ready": True}
    redis.kill()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["job_store"]["ready"] is False
        for response in (client.get("/v1/jobs"),
                         client.post("/v1/jobs", files=[("images", ("a.png", PNG))])):  # fmt: skip
            assert response.status_code == 503, response.text
            check_contract(response)
    finally:
        redis.start()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/jobs").status_code == 200


def _ok() -> dict[str, object]:
    return DeploymentReadiness(ready=True).model_dump()


def test_a_store_path_is_never_part_of_an_answer(client: TestClient) -> None:
    """An object store path in an error would tell a client the server's layout."""
    response = client.get(f"/v1/jobs/{'0' * 32}/items/0/output")
    check_contract(response)
    assert response.status_code == 404
