"""``POST /v1/mesh`` and the photo-to-3d preset over the fake backend (a real relief
mesh of the image's brightness): the file, its headers, and named 4xx errors."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
import trimesh
from fastapi.testclient import TestClient

from services.api.app import create_api
from services.config import Settings
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode

SETTINGS = Settings(
    models=["x4plus"], denoise_models=["scunet-color"], default_denoise_model="scunet-color",
    depth_model="depth-anything-v2-small", mesh_model="triposr", mesh_max_resolution=64,
    mesh_max_faces=20_000,
)  # fmt: skip
PNG = encode(astronaut(40))
LOADED = ["x4plus", "scunet-color", "depth-anything-v2-small", "triposr"]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_api(SETTINGS, FakeBackend(loaded=LOADED))) as test_client:
        yield test_client


def _post(client: TestClient, **form: str) -> object:
    return client.post("/v1/mesh", files={"image": ("a.png", PNG, "image/png")}, data=form)


def test_a_glb_mesh_with_its_counts(client: TestClient) -> None:
    response = _post(client, resolution="32")
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-type"] == "model/gltf-binary"
    assert headers["content-disposition"] == 'attachment; filename="mesh.glb"'
    scene = trimesh.load(io.BytesIO(response.content), file_type="glb")  # type: ignore[attr-defined]
    shape = next(iter(scene.geometry.values()))
    assert len(shape.faces) == int(headers["X-Pixserve-Mesh-Faces"]) and shape.is_watertight
    assert headers["X-Pixserve-Model"] == "depth-anything-v2-small"


@pytest.mark.parametrize(("fmt", "kind"), [("obj", "application/zip"),
                                           ("ply", "model/x-ply")])  # fmt: skip
def test_obj_and_ply(client: TestClient, fmt: str, kind: str) -> None:
    response = _post(client, format=fmt, engine="triposr", resolution="16")
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == kind  # type: ignore[attr-defined]
    if fmt == "obj":
        names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()  # type: ignore[attr-defined]
        assert "mesh.obj" in names and "mesh.mtl" in names


def test_the_photo_to_3d_preset_denoises_then_meshes(client: TestClient) -> None:
    response = client.post("/v1/run/photo-to-3d", files={"image": ("a.png", PNG, "image/png")},
                           data={"params": '{"mesh": {"resolution": 24}}'})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    assert response.headers["X-Pixserve-Steps"] == "denoise,mesh"
    presets = {p["name"]: p for p in client.get("/v1/presets").json()["presets"]}
    assert presets["photo-to-3d"]["available"] is True


@pytest.mark.parametrize(
    ("form", "status", "param", "words"),
    [
        ({"resolution": "65"}, 422, "resolution", "allowed 16 to 64"),
        ({"max_faces": "30000"}, 422, "max_faces", "allowed 100 to 20000"),
        ({"engine": "nerf"}, 422, "engine", "relief"),
        ({"format": "stl"}, 422, "format", "glb"),
        ({"model": "x4plus"}, 422, "model", "not a depth model"),
        ({"relief_depth": "nan"}, 422, "relief_depth", "finite"),
    ],
)
def test_bad_input_is_a_named_4xx(
    client: TestClient, form: dict[str, str], status: int, param: str, words: str
) -> None:
    response = _post(client, **form)
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert error["param"] == param and words in error["message"]


def test_an_engine_without_its_model_is_not_configured() -> None:
    settings = SETTINGS.model_copy(update={"mesh_model": None})
    with TestClient(create_api(settings, FakeBackend(loaded=LOADED))) as client:
        response = _post(client, engine="triposr")
        not_an_image = client.post("/v1/mesh", files={"image": ("a.png", b"GIF", "image/png")})
    assert response.status_code == 501 and "mesh_model" in response.text  # type: ignore[attr-defined]
    assert not_an_image.status_code in (400, 415)
