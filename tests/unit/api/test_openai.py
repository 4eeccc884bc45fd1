"""The OpenAI routes driven by the official ``openai`` client over FastAPI's TestClient
(a fake backend: no Ray, no models): chat whole and streamed, images as base64, the
model listing, and errors as the client reads them (type, param, no retries)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.api.app import create_api
from tests.unit.api.test_routes import SETTINGS
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode

pytestmark = pytest.mark.timeout(60)
DATA_URL = "data:image/png;base64," + base64.b64encode(encode(astronaut(24))).decode()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def http(backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_api(SETTINGS, backend)) as test_client:
        yield test_client


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    """The official client; two retries, as it ships, so a retried refusal would show."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http)


def ask(text: str) -> list[dict[str, object]]:
    image = {"type": "image_url", "image_url": {"url": DATA_URL}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]


def test_chat_whole(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="blip-vqa", messages=ask("what?"))
    assert completion.choices[0].message.content == "a test answer"
    assert completion.model == "blip-vqa" and completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3


def test_chat_streamed_in_pieces_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        messages=ask("what?"), model="blip-vqa", stream=True,
        stream_options={"include_usage": True}, max_completion_tokens=8,
    )  # fmt: skip
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas[0] == "" and "".join(d or "" for d in deltas) == "a test answer"
    assert [d for d in deltas if d] == ["a", " test", " answer"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({chunk.id for chunk in chunks}) == 1


def test_the_stream_headers(http: TestClient) -> None:
    body = {"messages": ask("what?"), "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert lines[-1] == "data: [DONE]"


def test_a_failure_midway_raises_in_the_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(messages=ask("fail midway"), stream=True,
                                            model="blip-vqa")  # fmt: skip
    with pytest.raises(openai.APIError, match="unavailable"):
        list(stream)


def test_errors_as_the_client_reads_them(client: openai.OpenAI, backend: FakeBackend) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=ask("what?"))
    assert unknown.value.param == "model" and unknown.value.type == "invalid_request_error"
    assert unknown.value.code == "unknown_model" and "blip-vqa" in unknown.value.message
    with pytest.raises(openai.UnprocessableEntityError) as typo:
        client.chat.completions.create(model="blip-vqa", messages=ask("what?"),
                                       extra_body={"max_tokenz": 3})  # fmt: skip
    assert typo.value.param == "max_tokenz" and "Extra inputs" in typo.value.message
    assert backend.calls == []  # refused before any model ran


def test_an_unconfigured_chat_is_not_retried(http: TestClient) -> None:
    """501 with x-should-retry: false: the client raises at once (its own retries off)."""
    with TestClient(create_api(SETTINGS.model_copy(update={"vqa_model": None}),
                               FakeBackend())) as bare:  # fmt: skip
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=bare)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="blip-vqa", messages=ask("what?"))
    assert refused.value.status_code == 501 and refused.value.code == "not_configured"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "PIXSERVE_VQA_MODEL" in refused.value.message


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"x4plus", "x2plus", "blip-vqa", "sdxl-base"} <= ids
    assert "x4plus-anime" not in ids  # declared, not configured here
    model = client.models.retrieve("x2plus")
    assert model.owned_by == "pixserve" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("x4plus-anime")


def test_images_generate_as_base64(client: openai.OpenAI, backend: FakeBackend) -> None:
    result = client.images.generate(prompt="a red bicycle", n=2, size="256x320",
                                    response_format="b64_json", extra_body={"seed": 5})  # fmt: skip
    assert result.data is not None and len(result.data) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json or ""))) for d in result.data]
    assert [image.size for image in images] == [(256, 320), (256, 320)]
    assert sorted(image.getpixel((0, 0))[0] for image in images) == [5, 6]  # seeds 5 and 6
    assert [call for call, _ in backend.calls] == ["generate", "generate"]


def test_images_edit_keeps_the_size(client: openai.OpenAI) -> None:
    result = client.images.edit(image=("a.png", encode(astronaut(40)), "image/png"),
                                prompt="as a painting", response_format="b64_json")  # fmt: skip
    assert result.data is not None
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert image.size == (40, 40)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model": "dall-e-3"}, "model"),
        ({"size": "big"}, "size"),
        ({"quality": "ultra"}, "quality"),
        ({"n": 11}, "n"),
        ({"extra_body": {"style_preset": "x"}}, "style_preset"),
    ],
)
def test_images_refusals_name_the_field(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.images.generate(prompt="a bicycle", **extra)  # type: ignore[arg-type]
    assert refused.value.param == param


def test_image_urls_need_the_job_storage(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client.images.generate(prompt="a bicycle", response_format="url")
    assert refused.value.status_code == 501 and refused.value.param == "response_format"
