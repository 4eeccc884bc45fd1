"""A model added at run time through the Serve app, without a restart: ``pixserve models
add`` uploads weights, every Upscaler replica fetches, checks and loads them, a sync
request and a job (run by a Dispatcher that had not heard of it) both use it, and bad
uploads get named 4xx."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.test_cli import pixserve
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_COMPACT, TINY_DNCNN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ADDED = "added-compact-x2"


def test_an_added_model_serves_sync_and_as_a_job(
    serve_url: str, tiny_store: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = tiny_store
    weights = tmp_path / "mine.pth"
    weights.write_bytes((root / f"{TINY_COMPACT}.pth").read_bytes())
    added = pixserve("models", "add", str(weights), "--name", ADDED, "--license", "MIT",
                     "--url", serve_url)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"{ADDED}: SRVGGNetCompact x2 (upscale)" in added.stdout and "loaded" in added.stdout
    fleet = httpx.get(f"{serve_url}/v1/admin/models", timeout=60).json()["deployments"]
    upscaler = next(d for d in fleet if d["deployment"] == "Upscaler")
    for replica in upscaler["replicas"]:  # every replica holds it
        assert any(m["name"] == ADDED and m["loaded"] for m in replica["models"]), replica
    models = {
        m["name"]: m for m in httpx.get(f"{serve_url}/v1/models", timeout=30).json()["models"]
    }
    assert models[ADDED]["state"] == "loaded" and models[ADDED]["license"] == "MIT"

    image = encode(astronaut(24))
    sync = httpx.post(f"{serve_url}/v1/upscale", files={"image": ("a.png", image)},
                      data={"model": ADDED}, timeout=60)  # fmt: skip
    assert sync.status_code == 200, sync.text
    assert (
        sync.headers["X-Pixserve-Model"] == ADDED
        and sync.headers["X-Pixserve-Output-Size"] == "48x48"
    )
    job = httpx.post(f"{serve_url}/v1/jobs", files=[("images", ("a.png", image))],
                     data={"model": ADDED}, timeout=60).json()  # fmt: skip
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{serve_url}/v1/jobs/{job['id']}", timeout=30).json())[
        "status"
    ] not in ("succeeded", "failed", "partial") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state["status"] == "succeeded", state["items"][0].get("error")
    output = httpx.get(state["items"][0]["output_url"], timeout=30)
    assert Image.open(io.BytesIO(output.content)).size == (48, 48)


@pytest.mark.parametrize(
    ("name", "filename", "form", "status", "param"),
    [
        ("fresh-a", "w.ckpt", {}, 422, "file"),
        ("fresh-b", "w.pth", {"junk": "1"}, 422, "junk"),
        ("x4plus", "w.pth", {}, 422, "name"),  # declared already
        ("fresh-c", "w.pth", {"task": "denoise"}, 422, "task"),  # a x2 model is no denoiser
        ("../etc", "w.pth", {}, 422, "name"),
    ],
)
def test_bad_uploads_are_refused_by_name(
    serve_url: str, tiny_store: tuple[Path, Path], name: str, filename: str,
    form: dict[str, str], status: int, param: str | None,
) -> None:  # fmt: skip
    root, _ = tiny_store
    data = (root / f"{TINY_COMPACT}.pth").read_bytes()
    response = httpx.post(f"{serve_url}/v1/admin/models", data={"name": name, **form},
                          files={"file": (filename, data)}, timeout=60)  # fmt: skip
    assert response.status_code == status, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param, response.json()


def test_garbage_weights_are_refused_and_nothing_is_recorded(
    serve_url: str, tiny_store: tuple[Path, Path]
) -> None:
    junk = {"file": ("g.pth", b"\x80\x04not a pickle")}
    response = httpx.post(f"{serve_url}/v1/admin/models", data={"name": "garbage"}, files=junk,
                          timeout=60)  # fmt: skip
    assert response.status_code == 422 and response.json()["error"]["param"] == "file"
    listed = json.dumps(httpx.get(f"{serve_url}/v1/models", timeout=30).json())
    assert "garbage" not in listed
    root, _ = tiny_store
    weights = {"file": ("d.pth", (root / f"{TINY_DNCNN}.pth").read_bytes())}
    denoiser = httpx.post(f"{serve_url}/v1/admin/models", timeout=60, files=weights,
                          data={"name": "added-dncnn", "task": "denoise"})  # fmt: skip
    assert denoiser.status_code == 201, denoiser.text
    assert denoiser.json()["deployment"] == "Denoiser" and denoiser.json()["replicas"]
