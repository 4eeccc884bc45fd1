"""``/v1/ws`` through the Serve proxy, with a real WebSocket client (websockets): a job
submitted over the channel streams its events and previews (an upscale's stitched
canvas, a generation's latents), a reconnect resumes after the last event id, another
tenant's job is refused, bad messages get named errors, and SSE stays preview-free."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from tests.integration.test_api_keys import create_key
from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def ws_url(serve_url: str, prefix: str = "") -> str:
    return serve_url.replace("http://", "ws://", 1) + prefix + "/v1/ws"


def frames(socket: ClientConnection, until: str = "completed") -> Iterator[dict[str, Any]]:
    """Frames up to (and with) the ``completed`` event; previews are acknowledged."""
    while True:
        frame = json.loads(socket.recv(timeout=120))
        yield frame
        if frame["type"] == "preview":
            socket.send(json.dumps({"type": "ack", "seq": frame["seq"]}))
        if frame["type"] == "event" and frame["event"] == until:
            return


def picture(frame: dict[str, Any]) -> Image.Image:
    header, _, data = frame["image"].partition(",")
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def submit(socket: ClientConnection, job: dict[str, Any]) -> dict[str, Any]:
    socket.send(json.dumps({"type": "submit", "request_id": "r1", "job": job}))
    answer = json.loads(socket.recv(timeout=60))
    assert answer["type"] == "submitted" and answer["request_id"] == "r1", answer
    return dict(answer["job"])


def test_an_upscale_job_streams_events_and_stitched_previews(serve_url: str) -> None:
    image = base64.b64encode(encode(astronaut(320))).decode()
    with connect(ws_url(serve_url), subprotocols=["pixserve"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "pixserve"
        assert json.loads(socket.recv(timeout=30)) == {"type": "ready"}
        job = submit(socket, {"task": "upscale", "model": TINY_RRDB, "images": [image]})
        got = list(frames(socket))
    kinds = [f["event"] for f in got if f["type"] == "event"]
    assert kinds[-1] == "completed" and "item" in kinds and "progress" in kinds
    assert got[-1]["data"]["status"] == "succeeded" and got[-1]["job_id"] == job["id"]
    previews = [f for f in got if f["type"] == "preview"]
    assert previews and previews[-1]["step"] == previews[-1]["steps"]  # the whole canvas last
    last = picture(previews[-1])
    assert last.format == "JPEG" and last.size == (256, 256)  # 1280 px out, 256 px preview
    output = httpx.get(got[-1]["data"]["items"][0]["output_url"], timeout=30)
    full = Image.open(io.BytesIO(output.content)).convert("RGB").resize((256, 256))
    difference = abs(
        int(sum(full.convert("L").getdata())) - int(sum(last.convert("L").getdata()))
    ) / (256 * 256)
    assert difference < 8  # the last preview is the output, shrunk
    # the same job over SSE: the same events, no previews
    with httpx.stream("GET", f"{serve_url}/v1/jobs/{job['id']}/events", timeout=60) as sse:
        text = "".join(sse.iter_text())
    assert "event: completed" in text and "event: preview" not in text


def test_a_generation_previews_its_latents(serve_url: str) -> None:
    job = {"task": "generate", "prompts": ["a lighthouse"], "width": 256, "height": 256,
           "steps": 4, "checkpoint": "realism"}  # fmt: skip
    with connect(ws_url(serve_url)) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "ready"
        submit(socket, job)
        got = list(frames(socket))
    previews = [f for f in got if f["type"] == "preview"]
    assert previews and {p["steps"] for p in previews} == {4}
    assert picture(previews[-1]).size == (256, 256)  # 32x32 latents at 8x
    assert got[-1]["data"]["status"] == "succeeded"


def test_a_reconnect_resumes_after_the_last_event(serve_url: str) -> None:
    image = base64.b64encode(encode(astronaut(48))).decode()
    with connect(ws_url(serve_url)) as socket:
        socket.recv(timeout=30)
        job = submit(socket, {"task": "upscale", "model": TINY_RRDB, "images": [image]})
        first = [f for f in frames(socket) if f["type"] == "event"]
    middle = first[len(first) // 2]
    with connect(ws_url(serve_url)) as socket:  # a new connection, as after a drop
        socket.recv(timeout=30)
        socket.send(json.dumps({"type": "subscribe", "job_id": job["id"],
                                "last_event_id": middle["id"]}))  # fmt: skip
        resumed = [f for f in frames(socket) if f["type"] == "event"]
    assert [f["id"] for f in resumed] == [f["id"] for f in first[first.index(middle) + 1 :]]


def test_another_tenants_job_and_bad_messages_are_refused(serve_url: str, redis_url: str) -> None:
    alice = create_key(redis_url, "ws-alice", rate=1000)
    bob = create_key(redis_url, "ws-bob", rate=1000)
    keyed = ws_url(serve_url, "/keyed")
    image = base64.b64encode(encode(astronaut(16))).decode()
    with connect(keyed, subprotocols=["pixserve", f"bearer.{alice}"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "pixserve"  # the key is never echoed back
        assert json.loads(socket.recv(timeout=30))["type"] == "ready"
        job = submit(socket, {"task": "upscale", "model": TINY_RRDB, "images": [image]})
    with connect(keyed) as socket:  # the key in a first message
        socket.send(json.dumps({"type": "auth", "key": bob}))
        assert json.loads(socket.recv(timeout=30))["type"] == "ready"
        socket.send(json.dumps({"type": "subscribe", "job_id": job["id"]}))
        refused = json.loads(socket.recv(timeout=30))
        assert refused["type"] == "error" and refused["error"]["code"] == "job_not_found"
        bad_job = {"task": "upscale", "scale": 99, "images": [image]}
        refusals = [({"type": "dance"}, "type"), ({"kind": 1}, "type"),
                    ({"type": "subscribe", "job_id": "../x"}, "job_id"),
                    ({"type": "submit", "job": bad_job}, "scale")]  # fmt: skip
        for message, param in refusals:
            socket.send(json.dumps(message))
            error = json.loads(socket.recv(timeout=30))
            assert error["type"] == "error" and error["error"]["param"] == param, error
        socket.send(json.dumps({"type": "ping"}))  # still serving
        assert json.loads(socket.recv(timeout=30)) == {"type": "pong"}
    with connect(keyed) as socket:  # no key at all
        socket.send(json.dumps({"type": "subscribe", "job_id": job["id"]}))
        error = json.loads(socket.recv(timeout=30))
        assert error["type"] == "error" and error["error"]["code"] == "unauthorized"
        with pytest.raises(Exception, match="4401"):
            socket.recv(timeout=30)
