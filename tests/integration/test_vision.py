"""Vision through the real Serve app (tiny random-weight BLIP and ViT models):
``POST /v1/caption``, OpenAI-style ``POST /v1/chat/completions`` with a data: URL, the
caption preset as text, and bad requests named."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.utils.images import astronaut, encode
from tests.utils.tiny_models import TINY_VQA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
LABELS = {"person", "space", "flag", "cat", "suit"}


def data_url(size: int = 64) -> str:
    return "data:image/png;base64," + base64.b64encode(encode(astronaut(size))).decode()


def chat(client: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"messages": messages, **extra})


def question(text: str, url: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if url:
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": parts}


def test_caption_tags_and_nsfw(client: httpx.Client) -> None:
    files = {"image": ("a.png", encode(astronaut(64)), "image/png")}
    described = client.post("/v1/caption", files=files)
    assert described.status_code == 200, described.text
    body = described.json()
    assert isinstance(body["caption"], str) and body["caption"]
    assert {tag["label"] for tag in body["tags"]} <= LABELS
    assert 0.0 <= body["nsfw"] <= 1.0
    only = client.post("/v1/caption", files=files, data={"outputs": ["nsfw"]}).json()
    assert only["caption"] is None and only["tags"] is None and only["nsfw"] == body["nsfw"]


def test_a_vision_question_in_openai_form(client: httpx.Client) -> None:
    system = {"role": "system", "content": "Answer briefly."}
    response = chat(client, [system, question("what is in the image?", data_url())], max_tokens=6)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == TINY_VQA
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_the_caption_preset_returns_text(client: httpx.Client) -> None:
    files = {"image": ("a.png", encode(astronaut(64)), "image/png")}
    response = client.post("/v1/run/caption", files=files)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]["caption"]
    assert outputs["caption"] and {tag["label"] for tag in outputs["tags"]} <= LABELS


@pytest.mark.parametrize(
    ("messages", "extra", "status", "words"),
    [
        ([question("what is this?")], {}, 422, "needs an image"),
        ([question("what?", "data:image/png,xyz")], {}, 422, "must be base64"),
        ([question("what?", "data:image/png;base64,@@@")], {}, 422, "not valid base64"),
        ([question("what?", "http://example.com/a.png")], {}, 422, "URL must be https"),
        ([question("what?", "https://127.0.0.1/a.png")], {}, 422, "non-public address"),
        ([question("what?", data_url())], {"n": 2}, 422, "n: Input should be 1"),
        ([question("what?", data_url())], {"model": "gpt-4o"}, 422, "not served for chat"),
        ([{"role": "robot", "content": "hi"}], {}, 422, "role"),
    ],
)
def test_bad_chat_requests_are_named(
    client: httpx.Client, messages: list[dict[str, Any]], extra: dict[str, Any], status: int,
    words: str,
) -> None:  # fmt: skip
    response = chat(client, messages, **extra)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json())
