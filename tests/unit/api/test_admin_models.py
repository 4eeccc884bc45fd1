"""``/v1/admin/models`` over the fake backend (two replicas per deployment): the fleet's
view, load and unload on every replica, ``/v1/models`` showing an unloaded model, and
named errors for a model that is not served or not controllable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_api
from services.config import Settings
from tests.utils.fake_backend import FakeBackend

pytestmark = pytest.mark.timeout(60)
SETTINGS = Settings(models=["x4plus", "animevideov3"], denoise_models=["scunet-color"],
                    default_denoise_model="scunet-color",
                    diffusion_checkpoints={"realism": "sdxl-base"})  # fmt: skip
LOADED = ["x4plus", "animevideov3", "scunet-color", "sdxl-base"]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(loaded=LOADED)


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_api(SETTINGS, backend)) as test_client:
        yield test_client


def test_the_fleet_lists_every_controlled_deployment(client: TestClient) -> None:
    body = client.get("/v1/admin/models").json()
    by_name = {entry["deployment"]: entry for entry in body["deployments"]}
    assert set(by_name) == {"Upscaler", "Denoiser", "Diffusion"}
    upscaler = by_name["Upscaler"]
    assert [r["replica"] for r in upscaler["replicas"]] == ["replica-1", "replica-2"]
    models = {m["name"]: m for m in upscaler["replicas"][0]["models"]}
    assert models["x4plus"]["loaded"] and models["x4plus"]["memory_bytes"] == 1 << 20
    assert upscaler["unanswered"] == 0


def test_unload_then_load_acts_on_every_replica(client: TestClient, backend: FakeBackend) -> None:
    response = client.post("/v1/admin/models/x4plus/unload")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deployment"] == "Upscaler" and body["action"] == "unload"
    assert body["freed_bytes"] == 2 << 20  # 1 MB on each of the two replicas
    assert all(r["changed"] for r in body["replicas"])
    assert ("control", ("Upscaler", "unload", "x4plus")) in backend.calls
    states = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert states["x4plus"]["state"] == "unloaded" and "loads on use" in states["x4plus"]["detail"]
    again = client.post("/v1/admin/models/x4plus/unload").json()
    assert again["freed_bytes"] == 0 and not any(r["changed"] for r in again["replicas"])
    loaded = client.post("/v1/admin/models/x4plus/load").json()
    assert loaded["freed_bytes"] == 0 and all(r["changed"] for r in loaded["replicas"])
    states = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert states["x4plus"]["state"] == "loaded"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/admin/models/x2plus/unload", 404, "model_not_found"),  # declared, not served
        ("/v1/admin/models/nope/load", 404, "model_not_found"),
        ("/v1/admin/models/sdxl-base/unload", 409, "conflict"),
        ("/v1/admin/models/..%2F..%2Fetc/load", 404, None),
    ],
)
def test_refusals_name_the_model(client: TestClient, path: str, status: int,
                                 code: str | None) -> None:  # fmt: skip
    response = client.post(path)
    assert response.status_code in (status, 422), response.text
    if code is not None:
        error = response.json()["error"]
        assert error["code"] == code and error["param"] == "name"


def test_a_memory_mode_set_at_run_time(client: TestClient, backend: FakeBackend) -> None:
    path = "/v1/admin/deployments/Upscaler/memory-mode"
    response = client.put(path, json={"mode": "low"})
    assert response.status_code == 200, response.text
    assert [r["memory_mode"] for r in response.json()["replicas"]] == ["low", "low"]
    assert ("control", ("Upscaler", "memory_mode", "low")) in backend.calls
    fleet = client.get("/v1/admin/models").json()["deployments"]
    assert {d["deployment"]: d["replicas"][0]["memory_mode"] for d in fleet}["Upscaler"] == "low"
    back = client.put(path, json={"mode": None}).json()  # to the configured mode
    assert back["replicas"][0]["memory_mode"] == "balanced"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/admin/deployments/Upscaler/memory-mode", {"mode": "tiny"}, 422, "mode"),
        ("/v1/admin/deployments/Upscaler/memory-mode", {"mode": "low", "x": 1}, 422, "x"),
        ("/v1/admin/deployments/Codec/memory-mode", {"mode": "low"}, 422, "deployment"),
        ("/v1/admin/deployments/Mesher/memory-mode", {"mode": "low"}, 409, "deployment"),
    ],
)
def test_memory_mode_refusals(client: TestClient, path: str, body: dict[str, object],
                              status: int, param: str) -> None:  # fmt: skip
    response = client.put(path, json=body)
    assert response.status_code == status, response.text
    assert param in str(response.json()["error"]["param"]), response.json()
