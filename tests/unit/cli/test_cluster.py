"""``pixserve cluster status|scale`` through the real ``kubernetes`` client, against a
local API server that answers as the Kubernetes API does for a RayService. No cluster
is reachable here: the exchange is recorded in ``tests/fixtures/rayservice.json``
(the chart's rendered RayService, with a status in KubeRay v1's schema)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli.main import main

pytestmark = pytest.mark.timeout(60)
RECORDED = json.loads((Path(__file__).parents[2] / "fixtures" / "rayservice.json").read_text())
PATH = "/apis/ray.io/v1/namespaces/pixserve/rayservices/pixserve"


class KubeApi(ThreadingHTTPServer):
    """Serves the recorded RayService; a PATCH is merged into it as the API server
    merges a JSON merge patch, and kept for the test to read."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.service: dict[str, Any] = copy.deepcopy(RECORDED)
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.tokens: set[str] = set()


class _Handler(BaseHTTPRequestHandler):
    server: KubeApi

    def do_GET(self) -> None:
        self.server.tokens.add(self.headers.get("Authorization", ""))
        if self.path.split("?")[0] != PATH:
            return self._answer(404, {"kind": "Status", "status": "Failure", "code": 404,
                                      "reason": "NotFound", "message": "not found"})  # fmt: skip
        self._answer(200, self.server.service)

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.patches.append((self.headers["Content-Type"], body))
        self.server.service["spec"].update(body["spec"])
        self.server.service["metadata"]["generation"] += 1
        self._answer(200, self.server.service)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        """Quiet."""


@pytest.fixture
def api() -> Iterator[KubeApi]:
    server = KubeApi()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def kubeconfig(tmp_path: Path, port: int) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "operator-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u",
                                                  "namespace": "pixserve"}}],
    }))  # fmt: skip
    return str(path)


def test_status_shows_applications_deployments_and_bounds(
    api: KubeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "status", "--kubeconfig", kubeconfig(tmp_path, api.server_port)]) == 0
    out = capsys.readouterr().out
    assert "rayservice pixserve/pixserve: ready True (NonZeroServeEndpoints)" in out
    assert "cluster pixserve-raycluster-7xk2q" in out and "application pixserve: RUNNING" in out
    upscaler = next(line for line in out.splitlines() if " Upscaler " in line)
    assert "UPSCALING" in upscaler and "1..4" in upscaler and "Upscaling from 1 to 2" in upscaler
    assert api.tokens == {"Bearer operator-token"}  # the kubeconfig's credentials


def test_scale_patches_only_the_bounds(
    api: KubeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kubeconfig(tmp_path, api.server_port)
    assert main(["cluster", "scale", "Upscaler", "--min", "2", "--max", "8",
                 "--kubeconfig", config]) == 0  # fmt: skip
    assert "pixserve/Upscaler replicas 2..8" in capsys.readouterr().out
    ((kind, patch),) = api.patches
    assert kind == "application/merge-patch+json" and list(patch) == ["spec"]
    before = yaml.safe_load(RECORDED["spec"]["serveConfigV2"])
    after = yaml.safe_load(patch["spec"]["serveConfigV2"])
    changed = next(d for d in after["applications"][0]["deployments"] if d["name"] == "Upscaler")
    assert (changed["autoscaling_config"]["min_replicas"],
            changed["autoscaling_config"]["max_replicas"]) == (2, 8)  # fmt: skip
    for app in (before, after):  # everything else as it was
        for entry in app["applications"][0]["deployments"]:
            if entry["name"] == "Upscaler":
                entry["autoscaling_config"].pop("min_replicas")
                entry["autoscaling_config"].pop("max_replicas")
    assert before == after


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["scale", "Upscaler", "--min", "5", "--max", "2"], "need 0 <= min <= max"),
        (["scale", "Painter", "--max", "2"], "deployment 'Painter' is unknown; deployments: "),
        (["scale", "Upscaler", "--app", "other", "--max", "2"], "no application 'other'"),
        (["scale", "Upscaler"], "give --min and/or --max"),
        (
            ["status", "--name", "elsewhere"],
            "could not read RayService pixserve/elsewhere: not found",
        ),
    ],
)
def test_refusals_say_what_is_wrong(
    api: KubeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
    words: str,
) -> None:  # fmt: skip
    config = kubeconfig(tmp_path, api.server_port)
    assert main(["cluster", *args, "--kubeconfig", config]) == 1
    assert words in capsys.readouterr().err and api.patches == []


def test_an_unreachable_api_server_and_no_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = KubeApi()
    port = server.server_port
    server.server_close()  # nothing listens there now
    assert main(["cluster", "status", "--kubeconfig", kubeconfig(tmp_path, port)]) == 1
    assert "the API server is unreachable" in capsys.readouterr().err
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["cluster", "status"]) == 1
    assert "no cluster configured" in capsys.readouterr().err
