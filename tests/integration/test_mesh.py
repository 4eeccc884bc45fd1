"""Image to 3D through the real Serve app (tiny TripoSR, Depth Anything and SegFormer in
their real layouts): the sync route in every format, 26 photos as one job followed
over SSE with a mesh and a preview per item, the photo-to-3d preset, and named 4xx."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
import trimesh
from PIL import Image

from tests.integration.test_cli import pixserve
from tests.integration.test_jobs_api import read_events, wait
from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _mesh(client: httpx.Client, image: bytes, **form: str) -> httpx.Response:
    return client.post("/v1/mesh", files={"image": ("a.png", image, "image/png")}, data=form)


def _geometry(data: bytes, fmt: str = "glb") -> trimesh.Trimesh:
    loaded = trimesh.load(io.BytesIO(data), file_type=fmt)
    return next(iter(loaded.geometry.values())) if fmt == "glb" else loaded


def test_a_relief_and_a_triposr_mesh(client: httpx.Client) -> None:
    photo = encode(astronaut(96))
    relief = _mesh(client, photo)
    assert relief.status_code == 200, relief.text
    assert relief.headers["content-type"] == "model/gltf-binary"
    assert relief.headers["X-Pixserve-Foreground"] == "segmentation"
    shape = _geometry(relief.content)
    assert shape.is_watertight and shape.visual.kind == "texture"
    assert len(shape.faces) == int(relief.headers["X-Pixserve-Mesh-Faces"]) <= 20_000
    triposr = _mesh(client, photo, engine="triposr", max_faces="2000", format="ply")
    assert triposr.status_code == 200, triposr.text
    shape = _geometry(triposr.content, "ply")
    assert 0 < len(shape.faces) <= 2000 and shape.visual.kind == "vertex"


def test_obj_comes_zipped_and_alpha_outlines_the_object(client: httpx.Client) -> None:
    rgba = Image.fromarray(astronaut(64)).convert("RGBA")
    rgba.putalpha(Image.new("L", (64, 64), 0))
    rgba.paste(Image.new("RGBA", (20, 40), (200, 40, 40, 255)), (22, 12))
    response = _mesh(client, encode_rgba(rgba), format="obj")
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Foreground"] == "alpha"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert {"mesh.obj", "mesh.mtl"} <= set(archive.namelist())


def encode_rgba(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_26_photos_as_one_job_with_progress_meshes_and_previews(client: httpx.Client) -> None:
    files = [("images", (f"{i}.png", encode(astronaut(40 + i)), "image/png")) for i in range(26)]
    submitted = client.post("/v1/jobs", files=files, data={"task": "mesh", "resolution": "24"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        events = read_events(stream)
    items = [json.loads(e["data"]) for e in events if e["event"] == "item"]
    ended = {item["index"] for item in items if item["status"] == "succeeded"}
    assert ended == set(range(26)) and events[-1]["event"] == "completed"
    done = wait(client, job_id)
    item = done["items"][25]
    assert item["texts"]["mesh"]["faces"] > 0 and item["texts"]["mesh"]["engine"] == "relief"
    mesh = client.get(item["output_url"])
    assert (
        mesh.headers["content-type"] == "model/gltf-binary"
        and _geometry(mesh.content).is_watertight
    )
    preview = client.get(item["preview_url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (512, 512)


def test_the_photo_to_3d_preset_and_refusals(client: httpx.Client) -> None:
    photo = encode(astronaut(48))
    response = client.post("/v1/run/photo-to-3d", files={"image": ("a.png", photo, "image/png")},
                           data={"params": '{"mesh": {"resolution": 32}}'})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Steps"] == "denoise,mesh"
    assert _geometry(response.content).is_watertight
    too_fine = _mesh(client, photo, resolution="49")
    assert too_fine.status_code == 422 and too_fine.json()["error"]["param"] == "resolution"
    job = client.post("/v1/jobs", json={"task": "mesh", "engine": "nerf", "images": ["eA=="]})
    assert job.status_code == 422 and job.json()["error"]["param"] == "engine"
    garbage = _mesh(client, b"not an image")
    assert garbage.status_code in (400, 415) and "error" in garbage.json()
    assert _mesh(client, photo).status_code == 200  # and it keeps serving


def test_the_cli_writes_a_mesh_beside_the_photo(serve_url: str, tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(encode(astronaut(40)))
    result = pixserve("mesh", str(source), "--keep-background", "--format", "ply",
                      "--resolution", "24", "--url", serve_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    shape = trimesh.load(tmp_path / "a.mesh.ply")
    assert len(shape.faces) > 0 and shape.is_watertight
    refused = pixserve("mesh", str(source), "--resolution", "4096", "--url", serve_url)
    assert refused.returncode == 1 and "resolution" in refused.stderr
