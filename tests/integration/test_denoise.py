"""``POST /v1/denoise`` on the Denoiser deployment (tiny random-weight SCUNet and
DnCNN saved as state dicts spandrel recognises): same-size output equal to the tile
engine's in-process result, readiness and the model listing per task, and models
used for the wrong task refused by name."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.upscale import UpscaleOptions, upscale_upload
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT, TINY_DNCNN, TINY_SCUNET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def noisy(size: int) -> bytes:
    rng = np.random.default_rng(0)
    pixels = astronaut(size).astype(float) + rng.normal(0, 20, (size, size, 3))
    return encode(np.clip(pixels, 0, 255).astype(np.uint8))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("model", [TINY_SCUNET, TINY_DNCNN])
def test_denoise_matches_the_engine(
    client: httpx.Client, tiny_store: tuple[Path, Path], model: str
) -> None:
    data = noisy(70)  # several tiles, with edges the SCUNet minimum pads
    response = client.post("/v1/denoise", files={"image": ("n.png", data, "image/png")},
                           data={"model": model})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Model"] == model
    assert response.headers["X-Pixserve-Output-Size"] == "70x70"
    root, manifest = tiny_store
    settings = Settings(model_store=root, extra_manifest=manifest, denoise_models=[model],
                        tile_size=32, tile_pad=20, device="cpu")  # fmt: skip
    engine = UpscaleEngine(settings, ModelStore(root, load_manifest(manifest)), [model])
    engine.load()
    local = asyncio.run(upscale_upload(data, UpscaleOptions(model), 1, EngineBackend(engine),
                                       settings))  # fmt: skip
    assert np.abs(pixels(response.content) - pixels(local.data)).max() <= 1


def test_default_model_format_and_readiness(client: httpx.Client) -> None:
    response = client.post("/v1/denoise", files={"image": ("n.png", noisy(40), "image/png")},
                           data={"format": "webp"})  # fmt: skip
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert response.headers["X-Pixserve-Model"] == TINY_DNCNN
    denoiser = client.get("/readyz").json()["deployments"]["Denoiser"]
    # at least the configured ones (test_add_model.py adds one at run time)
    assert denoiser["ready"] and {TINY_DNCNN, TINY_SCUNET} <= set(denoiser["loaded"])
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models[TINY_SCUNET]["task"] == "denoise" and models[TINY_SCUNET]["state"] == "loaded"
    assert models["scunet-color"]["state"] == "not_configured"
    assert models[TINY_COMPACT]["task"] == "upscale"


def test_models_of_the_other_task_are_refused(client: httpx.Client) -> None:
    image = {"image": ("a.png", encode(astronaut(16)), "image/png")}
    wrong = client.post("/v1/denoise", files=image, data={"model": TINY_COMPACT})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "unknown_model"
    assert "is a upscale model" in wrong.json()["error"]["message"]
    assert TINY_SCUNET in wrong.json()["error"]["message"]
    other = client.post("/v1/upscale", files=image, data={"model": TINY_SCUNET})
    assert other.status_code == 422 and "not a upscale model" in other.json()["error"]["message"]
    bad = client.post("/v1/denoise", files={"image": ("b.png", b"junk", "image/png")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
