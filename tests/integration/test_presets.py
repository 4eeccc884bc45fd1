"""Presets through the real Serve app: each available preset end to end, the chained
result equal to running the same steps in-process, presets as job pipelines, and the
presets whose deployments this platform lacks refused by name."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.imaging.codec import DecodedImage, decode_image, encode_image, image_limits
from services.models.faces import FaceCrops, FaceEngine
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.faces import FaceOptions, restore_faces
from services.pipelines.upscale import UpscaleOptions, upscale
from tests.integration.test_jobs_api import wait
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_DETECTOR, TINY_DNCNN, TINY_GFPGAN, TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ONE_FACE = json.dumps({"face": {"max_faces": 1}})


def run(client: httpx.Client, preset: str, data: bytes, **form: str) -> httpx.Response:
    return client.post(f"/v1/run/{preset}", files={"image": ("a.png", data, "image/png")},
                       data=form)  # fmt: skip


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_listing_says_what_can_run(client: httpx.Client) -> None:
    listing = {p["name"]: p for p in client.get("/v1/presets").json()["presets"]}
    assert {"enhance", "de-old-photo", "portrait", "make-anime", "stylize", "caption",
            "thumbnail-webp"} <= set(listing)  # fmt: skip
    assert listing["enhance"]["available"] and listing["thumbnail-webp"]["available"]
    runnable = {name for name, preset in listing.items() if preset["available"]}
    reasons = {name: preset["reason"] for name, preset in listing.items()}
    assert set(listing) - runnable == {"make-anime"}, reasons
    assert "x4plus-anime" in listing["make-anime"]["reason"]  # its upscaler is not served here
    assert listing["caption"]["output"] is None
    assert [s["deployment"] for s in listing["enhance"]["steps"]] == [
        "Denoiser", "Upscaler", "FaceRestorer"]  # fmt: skip


def test_enhance_equals_its_steps_run_in_process(
    client: httpx.Client, tiny_store: tuple[Path, Path]
) -> None:
    """denoise -> upscale 2x -> one face restored, chained across three deployments,
    must give what the same engines give in this process."""
    data = encode(astronaut(48))
    response = run(client, "enhance", data, params=ONE_FACE)
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Steps"] == "denoise,upscale,face"
    assert response.headers["X-Pixserve-Output-Size"] == "96x96"
    assert response.headers["content-type"] == "image/png"
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, models=[TINY_RRDB],
                        denoise_models=[TINY_DNCNN], face_models=[TINY_GFPGAN],
                        face_detectors=[TINY_DETECTOR], tile_size=32, tile_pad=20)  # fmt: skip
    local = asyncio.run(_enhance_locally(data, settings))
    assert np.abs(pixels(response.content) - pixels(local)).max() <= 2


async def _enhance_locally(data: bytes, settings: Settings) -> bytes:
    store = ModelStore(settings.model_store, load_manifest(settings.extra_manifest))
    denoiser = UpscaleEngine(settings, store, [TINY_DNCNN])
    upscaler, faces = UpscaleEngine(settings, store), FaceEngine(settings, store)
    for engine in (denoiser, upscaler, faces):
        engine.load()
    image = decode_image(data, image_limits(settings))
    clean = await upscale(image, UpscaleOptions(TINY_DNCNN), 1, EngineBackend(denoiser),
                          settings)  # fmt: skip
    assert clean.pixels is not None
    image = DecodedImage(clean.pixels, 8, "png")
    big = await upscale(image, UpscaleOptions(TINY_RRDB, 2.0), 4, EngineBackend(upscaler),
                        settings)  # fmt: skip

    async def restore(crops: FaceCrops) -> np.ndarray:
        (result,) = faces.restore([crops])
        assert isinstance(result, np.ndarray)
        return result

    options = FaceOptions(TINY_GFPGAN, TINY_DETECTOR, weight=0.8, background_model=TINY_RRDB,
                          max_faces=1)  # fmt: skip
    assert big.pixels is not None
    done = await restore_faces(DecodedImage(big.pixels, 8, "png"), options, faces.detect,
                               restore, EngineBackend(upscaler), settings)  # fmt: skip
    return encode_image(done.pixels, "png")


@pytest.mark.parametrize(
    ("preset", "form", "content_type", "size"),
    [
        ("portrait", {}, "image/png", (128, 128)),
        ("de-old-photo", {"params": ONE_FACE}, "image/jpeg", (128, 128)),
        ("thumbnail-webp", {}, "image/webp", (64, 64)),
        ("thumbnail-webp", {"format": "avif", "quality": "50"}, "image/avif", (64, 64)),
    ],
)
def test_each_available_preset_end_to_end(
    client: httpx.Client, preset: str, form: dict[str, str], content_type: str,
    size: tuple[int, int],
) -> None:  # fmt: skip
    response = run(client, preset, encode(astronaut(64)), **form)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["X-Pixserve-Preset"] == preset
    assert Image.open(io.BytesIO(response.content)).size == size


def test_thumbnail_fits_its_box_and_budget(client: httpx.Client) -> None:
    response = run(client, "thumbnail-webp", encode(astronaut(512)))
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (256, 256)
    assert len(response.content) <= 40000


@pytest.mark.parametrize(
    ("preset", "form", "status", "words"),
    [
        ("sharpen", {}, 422, "unknown preset 'sharpen'"),
        ("enhance", {"params": "{"}, 422, "params: not JSON"),
        ("enhance", {"params": '{"upscale": {"zoom": 2}}'}, 422, "has no parameter ['zoom']"),
        ("portrait", {"format": "gif"}, 422, "format"),
    ],
)
def test_bad_preset_requests_are_named(
    client: httpx.Client, preset: str, form: dict[str, str], status: int, words: str
) -> None:
    response = run(client, preset, encode(astronaut(32)), **form)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json())


def test_a_preset_as_a_job_pipeline(client: httpx.Client) -> None:
    files = [("images", (f"{i}.png", encode(astronaut(40 + 8 * i)), "image/png"))
             for i in range(2)]  # fmt: skip
    response = client.post("/v1/jobs", files=files, data={"preset": "portrait",
                                                          "format": "webp"})  # fmt: skip
    assert response.status_code == 202, response.text
    done = wait(client, response.json()["id"])
    assert done["status"] == "succeeded", [item["error"] for item in done["items"]]
    for item, side in zip(done["items"], (80, 96), strict=True):
        assert item["output_url"].endswith("/output") and "output_key" not in item
        output = client.get(f"/v1/jobs/{done['id']}/items/{item['index']}/output")
        assert output.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(output.content)).size == (side, side)


def test_a_text_preset_job_stores_json(client: httpx.Client) -> None:
    files = [("images", ("a.png", encode(astronaut(48)), "image/png"))]
    response = client.post("/v1/jobs", files=files, data={"preset": "caption"})
    assert response.status_code == 202, response.text
    done = wait(client, response.json()["id"])
    assert done["status"] == "succeeded", [item["error"] for item in done["items"]]
    (item,) = done["items"]
    stored = client.get(item["output_url"])
    assert stored.headers["content-type"] == "application/json"
    output = stored.json()
    assert output["caption"]["caption"] and 0 <= output["caption"]["nsfw"] <= 1
    assert item["texts"] == output


def test_archive_returns_the_image_with_its_caption_beside(client: httpx.Client) -> None:
    """The caption step runs on the denoised image beside the upscale -> face chain:
    the image comes back with the caption step's texts in X-Pixserve-Texts."""
    response = run(client, "archive", encode(astronaut(64)), params=ONE_FACE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["X-Pixserve-Steps"] == "denoise,upscale,face,describe"
    assert Image.open(io.BytesIO(response.content)).size == (128, 128)
    described = json.loads(response.headers["X-Pixserve-Texts"])["describe"]
    assert described["caption"] and isinstance(described["tags"], list)
    assert 0 <= described["nsfw"] <= 1


def test_an_archive_job_keeps_each_items_texts(client: httpx.Client) -> None:
    files = [("images", (f"{i}.png", encode(astronaut(48 + 8 * i)), "image/png"))
             for i in range(2)]  # fmt: skip
    response = client.post("/v1/jobs", files=files,
                           data={"preset": "archive", "params": ONE_FACE})  # fmt: skip
    assert response.status_code == 202, response.text
    done = wait(client, response.json()["id"])
    assert done["status"] == "succeeded", [item["error"] for item in done["items"]]
    for item in done["items"]:
        assert item["texts"]["describe"]["caption"], item


def test_preset_jobs_are_checked_at_submission(client: httpx.Client) -> None:
    files = [("images", ("a.png", encode(astronaut(32)), "image/png"))]
    refused = client.post("/v1/jobs", files=files, data={"preset": "sharpen"})
    assert refused.status_code == 422 and "unknown preset" in refused.json()["error"]["message"]
    form = {"preset": "portrait", "params": '{"face": {"upscale": 9}}'}
    bad = client.post("/v1/jobs", files=files, data=form)
    assert bad.status_code == 422 and "upscale must be 1 to 4" in bad.json()["error"]["message"]


def test_an_error_inside_the_chain_reaches_the_caller_as_itself(client: httpx.Client) -> None:
    """The upscale step (second of enhance's chain) refuses its output size at run time;
    the face step and the encoder after it never run, and the caller gets that step's
    413 naming the limit, not a 503 or a traceback. As a job: the item fails with it
    at once (no retry)."""
    params = '{"upscale": {"scale": null, "width": 9000, "height": 9000}}'
    response = run(client, "enhance", encode(astronaut(32)), params=params)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and "9000x9000" in error["message"]
    assert "Traceback" not in response.text and "ray" not in error["message"].lower()
    files = [("images", ("a.png", encode(astronaut(32)), "image/png"))]
    job = client.post("/v1/jobs", files=files, data={"preset": "enhance", "params": params})
    assert job.status_code == 202, job.text
    done = wait(client, job.json()["id"])
    (item,) = done["items"]
    assert done["status"] == "failed" and item["error"].startswith("image_too_large")
    assert item["attempts"] == 1
