"""Vision: ``POST /v1/caption`` (caption, tags, NSFW score of one image) and
``POST /v1/chat/completions`` (OpenAI-style vision questions with ``image_url`` parts:
``data:`` URLs, or https from the hosts ``vision_url_hosts`` allows)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from services.api.deps import BackendDep, RunnerDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS
from services.config import Settings
from services.errors import InvalidParameter, PayloadTooLarge
from services.imaging.codec import DecodedImage, decode_image, image_limits
from services.net.fetch import SafeFetcher

router = APIRouter(tags=["vision"])


class DescriptionPublic(BaseModel):
    caption: str | None
    tags: list[dict[str, Any]] | None
    nsfw: float | None = Field(description="Probability the image is not safe for work.")


@router.post("/v1/caption", responses=IMAGE_ERRORS)
async def create_caption(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    outputs: Annotated[
        list[str] | None, Form(description="Any of caption, tags, nsfw (default: all).")
    ] = None,
) -> DescriptionPublic:
    """Describe one image: a caption, tags with scores and an NSFW probability."""
    fields: dict[str, Any] = {"task": "caption"} | ({"outputs": outputs} if outputs else {})
    result = await runner.run(fields, await read_upload(image, settings))
    return DescriptionPublic(**(result.texts or {}))


class ImageUrl(BaseModel):
    url: str


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    """The OpenAI chat-completions body, as far as a vision question needs it."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=512)
    stream: bool = False


@router.post("/v1/chat/completions", responses=IMAGE_ERRORS)
async def create_chat_completion(
    body: ChatRequest, request: Request, settings: SettingsDep, backend: BackendDep
) -> dict[str, Any]:
    """Answer the last user message about the latest image in the conversation; the
    answer comes back as an OpenAI ``chat.completion``."""
    if body.stream:
        raise InvalidParameter("stream is not supported: send stream=false")
    question, url = _question_and_image(body.messages)
    data = await _image_bytes(url, settings, request.app.state.image_fetcher)
    decoded: DecodedImage = await asyncio.to_thread(decode_image, data, image_limits(settings))
    answer, prompt_tokens, answer_tokens = await backend.answer(
        decoded, question, body.max_tokens or settings.caption_max_tokens
    )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": settings.vqa_model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": answer_tokens,
                  "total_tokens": prompt_tokens + answer_tokens},
    }  # fmt: skip


def _question_and_image(messages: list[ChatMessage]) -> tuple[str, str]:
    """The last user message's text, and the latest image_url of the conversation."""
    question, url = None, None
    for message in messages:
        parts = message.content if isinstance(message.content, list) else [
            ContentPart(type="text", text=message.content)]  # fmt: skip
        for part in parts:
            if part.type == "image_url" and part.image_url is not None:
                url = part.image_url.url
            elif message.role == "user" and part.text:
                question = part.text
    if url is None:
        raise InvalidParameter("a vision question needs an image: add an image_url part")
    if not question:
        raise InvalidParameter("no question: the user message has no text part")
    return question, url


async def _image_bytes(url: str, settings: Settings, fetcher: SafeFetcher) -> bytes:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise InvalidParameter("data: URLs must be base64 (data:image/png;base64,...)")
        if len(payload) * 3 // 4 > settings.max_upload_bytes:
            raise PayloadTooLarge(f"the image is over {settings.max_upload_bytes} bytes")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise InvalidParameter(f"the data: URL is not valid base64: {exc}") from None
    host = urlsplit(url).hostname or ""
    if settings.vision_url_hosts and host not in settings.vision_url_hosts:
        raise InvalidParameter(f"image host {host!r} is not allowed; allowed: "
                               f"{', '.join(settings.vision_url_hosts)}")  # fmt: skip
    body, _ = await fetcher.get(url)
    return body
