"""Models unloaded and loaded at run time through the Serve app: every Upscaler replica
hears the command on the control channel, an unload of the real x4plus gives its
memory back (the replicas' RSS drops), the model keeps serving (its next request loads
it again), and the CLI shows and drives it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import REAL_UPSCALER
from tests.integration.test_cli import pixserve
from tests.utils.images import astronaut, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
X4PLUS_BYTES = 16_697_987 * 4  # RRDBNet x4plus: 16.7 M float32 parameters


def _upscaler(serve_url: str) -> dict[str, Any]:
    fleet = httpx.get(f"{serve_url}/v1/admin/models", timeout=60).json()
    return next(d for d in fleet["deployments"] if d["deployment"] == "Upscaler")


def _state(serve_url: str, name: str) -> str:
    models = httpx.get(f"{serve_url}/v1/models", timeout=30).json()["models"]
    return str(next(model["state"] for model in models if model["name"] == name))


def test_unload_frees_memory_and_the_model_keeps_serving(serve_url: str) -> None:
    upscaler = _upscaler(serve_url)
    assert upscaler["replicas"] and upscaler["unanswered"] == 0
    for replica in upscaler["replicas"]:
        held = {model["name"]: model for model in replica["models"]}
        assert held[REAL_UPSCALER]["loaded"]
        assert held[REAL_UPSCALER]["memory_bytes"] == pytest.approx(X4PLUS_BYTES, rel=0.01)
        assert replica["rss_bytes"] > X4PLUS_BYTES

    response = httpx.post(f"{serve_url}/v1/admin/models/{REAL_UPSCALER}/unload", timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deployment"] == "Upscaler" and len(body["replicas"]) == len(upscaler["replicas"])
    assert all(replica["changed"] and replica["error"] is None for replica in body["replicas"])
    # the weights' pages go back to the OS: at least half of them per replica
    assert body["freed_bytes"] > len(body["replicas"]) * X4PLUS_BYTES // 2, body
    assert _state(serve_url, REAL_UPSCALER) == "unloaded"
    assert httpx.get(f"{serve_url}/readyz", timeout=30).status_code == 200  # resting, not down
    after = {m["name"]: m for m in _upscaler(serve_url)["replicas"][0]["models"]}
    assert not after[REAL_UPSCALER]["loaded"] and after[REAL_UPSCALER]["memory_bytes"] == 0

    image = encode(astronaut(24))
    served = httpx.post(f"{serve_url}/v1/upscale", files={"image": ("a.png", image)},
                        data={"model": REAL_UPSCALER}, timeout=120)  # fmt: skip
    assert served.status_code == 200, served.text  # loaded again for this request

    loaded = httpx.post(f"{serve_url}/v1/admin/models/{REAL_UPSCALER}/load", timeout=120).json()
    assert all(replica["error"] is None for replica in loaded["replicas"])
    assert all(any(m["name"] == REAL_UPSCALER and m["loaded"] for m in replica["models"])
               for replica in loaded["replicas"])  # fmt: skip
    assert _state(serve_url, REAL_UPSCALER) == "loaded"


def test_the_cli_shows_and_drives_it(serve_url: str) -> None:
    shown = pixserve("models", "ps", "--url", serve_url)
    assert shown.returncode == 0, shown.stderr
    assert all(word in shown.stdout for word in ("Upscaler", REAL_UPSCALER, "(process)"))
    unloaded = pixserve("models", "unload", REAL_UPSCALER, "--url", serve_url)
    assert unloaded.returncode == 0, unloaded.stderr
    assert f"{REAL_UPSCALER} unloaded" in unloaded.stdout and "freed" in unloaded.stdout
    loaded = pixserve("models", "load", REAL_UPSCALER, "--url", serve_url)
    assert loaded.returncode == 0 and f"{REAL_UPSCALER} loaded" in loaded.stdout, loaded.stdout
    refused = pixserve("models", "unload", "x2plus", "--url", serve_url)  # declared, not served
    assert refused.returncode == 1 and "not served here" in refused.stderr


def test_a_memory_mode_set_at_run_time(serve_url: str) -> None:
    """Every Upscaler replica takes the mode now and reports it; requests still run; a
    null mode goes back to the configured one."""
    path = f"{serve_url}/v1/admin/deployments/Upscaler/memory-mode"
    response = httpx.put(path, json={"mode": "low"}, timeout=120)
    assert response.status_code == 200, response.text
    assert {replica["memory_mode"] for replica in response.json()["replicas"]} == {"low"}
    assert {r["memory_mode"] for r in _upscaler(serve_url)["replicas"]} == {"low"}
    image = encode(astronaut(16))
    served = httpx.post(f"{serve_url}/v1/upscale", files={"image": ("a.png", image)}, timeout=60)
    assert served.status_code == 200, served.text
    back = httpx.put(path, json={"mode": None}, timeout=120).json()
    assert {replica["memory_mode"] for replica in back["replicas"]} == {"balanced"}
    refused = httpx.put(f"{serve_url}/v1/admin/deployments/Codec/memory-mode",
                        json={"mode": "low"}, timeout=30)  # fmt: skip
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "deployment"
