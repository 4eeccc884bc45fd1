"""The official ``openai`` client against the real Serve app (tiny random-weight BLIP
VQA and SDXL): a vision chat whole and streamed token by token, the model listing,
images as base64 and as URLs that serve the PNG."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.test_vision import data_url
from tests.utils.tiny_models import TINY_RRDB, TINY_SDXL, TINY_VQA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SMALL = {"steps": 2}  # SDXL's own field beside OpenAI's


@pytest.fixture(scope="module")
def client(serve_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{serve_url}/v1", api_key="none", timeout=240) as oa:
        yield oa


def ask(text: str) -> list[dict[str, object]]:
    image = {"type": "image_url", "image_url": {"url": data_url()}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]


def test_a_vision_chat_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=TINY_VQA, messages=ask("what is it?"),
                                           max_tokens=6)  # fmt: skip
    text = whole.choices[0].message.content
    assert isinstance(text, str) and whole.model == TINY_VQA
    stream = client.chat.completions.create(
        model=TINY_VQA, messages=ask("what is it?"), max_tokens=6, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    pieces = [piece for piece in pieces if piece]
    assert "".join(pieces) == text  # greedy decoding: the same answer, piece by piece
    assert len(pieces) >= 2  # tokens came as they were generated, not as one block
    usage = chunks[-1].usage
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_the_model_listing(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {TINY_RRDB, TINY_VQA, TINY_SDXL} <= set(models)
    assert client.models.retrieve(TINY_RRDB).owned_by == "pixserve"


def test_images_as_base64_and_as_urls(client: openai.OpenAI) -> None:
    b64 = client.images.generate(
        prompt="a red bicycle",
        size="256x256",
        model="realism",
        response_format="b64_json",
        extra_body=SMALL | {"seed": 9},
    )
    assert b64.data is not None
    first = base64.b64decode(b64.data[0].b64_json or "")
    assert Image.open(io.BytesIO(first)).size == (256, 256)
    urls = client.images.generate(
        prompt="a red bicycle",
        size="256x256",
        model=TINY_SDXL,
        response_format="url",
        extra_body=SMALL | {"seed": 9},
    )
    assert urls.data is not None and urls.data[0].url is not None
    fetched = httpx.get(urls.data[0].url, timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content == first  # the same seed, the same image


def test_an_image_edit(client: openai.OpenAI) -> None:
    start = base64.b64decode(data_url(96).partition(",")[2])
    edited = client.images.edit(
        image=("a.png", start, "image/png"),
        prompt="a painting",
        response_format="b64_json",
        extra_body={"steps": 2, "seed": 1, "strength": 0.5},  # one step: within the budget
    )
    assert edited.data is not None
    image = Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json or "")))
    assert image.size == (96, 96)
