"""OpenAI's API shapes, for the clients people already have (the ``openai`` package and
its kin): ``POST /v1/chat/completions`` (vision questions, streamed or not) and
``POST /v1/images/generations`` / ``/v1/images/edits`` (SDXL text- and image-to-image).
Fields OpenAI defines and pixserve cannot honour are refused by name, never ignored."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.api.deps import (
    BackendDep,
    RunnerDep,
    SettingsDep,
    decode_base64_image,
    read_upload,
)
from services.api.schemas import IMAGE_CONTENT, IMAGE_ERRORS, errors
from services.config import Settings
from services.errors import (
    InternalError,
    InvalidParameter,
    NotConfigured,
    PixserveError,
    UnknownModel,
)
from services.imaging.codec import decode_image, image_limits
from services.jobs.outputs import IMAGE_NAME_PATTERN
from services.jobs.service import JobService
from services.models.vision import Answer, Question
from services.net.fetch import SafeFetcher
from services.pipelines.usecases import TaskResult

router = APIRouter(tags=["openai"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
MAX_IMAGES = 10  # OpenAI's own limit on n


class _Strict(BaseModel):
    """A misspelled field is a 422 naming it, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    """The chat-completions body, as far as a vision question needs it."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=512)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=512)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


@router.post("/v1/chat/completions", responses=IMAGE_ERRORS | {501: {}})
async def create_chat_completion(
    body: ChatRequest, request: Request, settings: SettingsDep, backend: BackendDep
) -> Any:
    """Answer the last user message about the latest image in the conversation, as a
    ``chat.completion``, or as ``chat.completion.chunk`` events with ``stream``."""
    model = _vqa_model(body.model, settings)
    text, url = _question_and_image(body.messages)
    data = await _image_bytes(url, settings, request.app.state.image_fetcher)
    decoded = await asyncio.to_thread(decode_image, data, image_limits(settings))
    tokens = body.max_completion_tokens or body.max_tokens or settings.caption_max_tokens
    question = Question(text, tokens, body.temperature, body.top_p)
    pieces = aiter(backend.answer(decoded, question))
    first = await anext(pieces)  # a refusal here is still a plain JSON error
    completion = Completion(model)
    if not body.stream:
        answer = first if isinstance(first, Answer) else await _last(pieces)
        return completion.whole(answer)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return StreamingResponse(completion.chunks(first, pieces, include_usage),
                             media_type="text/event-stream", headers=SSE_HEADERS)  # fmt: skip


class Completion:
    """One completion's envelope: its id, time and model, whole or in chunks."""

    def __init__(self, model: str) -> None:
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model

    def whole(self, answer: Answer) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer.text}
        return self._envelope("chat.completion", [
            {"index": 0, "finish_reason": "stop", "message": message}
        ]) | {"usage": _usage(answer)}  # fmt: skip

    async def chunks(
        self, first: str | Answer, rest: AsyncIterator[str | Answer], include_usage: bool
    ) -> AsyncIterator[str]:
        """Server-sent chunks as OpenAI sends them: the role, the text deltas, the finish
        reason, the usage when asked, then ``[DONE]``; a failure midway is an error
        event (the openai client raises it)."""
        yield self._chunk({"role": "assistant", "content": ""})
        try:
            piece = first
            while not isinstance(piece, Answer):
                yield self._chunk({"content": piece})
                piece = await anext(rest)
        except PixserveError as exc:
            yield _event({"error": {"code": exc.code, "message": exc.message,
                                    "type": "server_error", "param": None}})  # fmt: skip
            return
        yield self._chunk({}, finish_reason="stop")
        if include_usage:
            yield _event(self._envelope("chat.completion.chunk", []) | {"usage": _usage(piece)})
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _event(self._envelope("chat.completion.chunk", [choice]))

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}  # fmt: skip


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.answer_tokens,
            "total_tokens": answer.prompt_tokens + answer.answer_tokens}  # fmt: skip


async def _last(pieces: AsyncIterator[str | Answer]) -> Answer:
    async for piece in pieces:
        if isinstance(piece, Answer):
            return piece
    raise InternalError("the answer ended without its result")  # not reached


def _vqa_model(requested: str | None, settings: Settings) -> str:
    """The visual question model, which is the one chat model here; another name is
    refused rather than silently answered by a different model."""
    if settings.vqa_model is None:
        raise NotConfigured("no vqa model is configured: set PIXSERVE_VQA_MODEL (the "
                            "vqa_model setting) and fetch the model with `pixserve models "
                            "pull blip-vqa`", param="model")  # fmt: skip
    if requested not in (None, settings.vqa_model):
        raise UnknownModel(f"model: '{requested}' is not served for chat here; vision "
                           f"questions go to '{settings.vqa_model}'", param="model")  # fmt: skip
    return settings.vqa_model


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
        raise InvalidParameter("a vision question needs an image: add an image_url part",
                               param="messages")  # fmt: skip
    if not question:
        raise InvalidParameter("no question: the user message has no text part",
                               param="messages")  # fmt: skip
    return question, url


async def _image_bytes(url: str, settings: Settings, fetcher: SafeFetcher) -> bytes:
    if url.startswith("data:"):
        return decode_base64_image(url, settings.max_upload_bytes, "image_url")
    host = urlsplit(url).hostname or ""
    if settings.vision_url_hosts and host not in settings.vision_url_hosts:
        raise InvalidParameter(f"image host {host!r} is not allowed; allowed: "
                               f"{', '.join(settings.vision_url_hosts)}")  # fmt: skip
    body, _ = await fetcher.get(url)
    return body


# --- images -------------------------------------------------------------------------


class ImagesRequest(_Strict):
    """``images.generate``'s body; beyond OpenAI's fields, SDXL's own (steps, seed...)."""

    prompt: str = Field(min_length=1)
    model: str | None = Field(default=None, description="A checkpoint alias or model name.")
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="auto", description="WIDTHxHEIGHT, or auto (the default).")
    response_format: Literal["url", "b64_json"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] = "auto"
    user: str | None = None
    negative_prompt: str = ""
    steps: int | None = Field(default=None, ge=1)
    guidance: float | None = None
    scheduler: str | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)


STEPS_OF_QUALITY = {"low": 15, "medium": 30, "standard": 30, "high": 50, "hd": 50}


@router.post("/v1/images/generations", responses=IMAGE_ERRORS | {501: {}})
async def create_image(
    body: ImagesRequest, request: Request, settings: SettingsDep, runner: RunnerDep
) -> dict[str, Any]:
    """Text-to-image: ``n`` SDXL images, as ``b64_json`` (the default) or as ``url``s
    that stay readable for ``presign_ttl_s`` (the outputs of a job made for them)."""
    fields = _generate_fields(body.model_dump(exclude={"n", "response_format", "user"}),
                              settings)  # fmt: skip
    return await _images(request, runner, fields, None, body.n, body.response_format)


@router.post("/v1/images/edits", responses=IMAGE_ERRORS | {501: {}})
async def create_image_edit(
    request: Request,
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The start image (image-to-image).")],
    prompt: Annotated[str, Form(min_length=1)],
    model: Annotated[str | None, Form()] = None,
    n: Annotated[int, Form(ge=1, le=MAX_IMAGES)] = 1,
    size: Annotated[str, Form(description="Must be auto: the start image's size.")] = "auto",
    response_format: Annotated[Literal["url", "b64_json"], Form()] = "b64_json",
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    quality: Annotated[str, Form()] = "auto",
    strength: Annotated[float, Form(gt=0, le=1)] = 0.6,
    seed: Annotated[int | None, Form(ge=0, lt=2**63)] = None,
    user: Annotated[str | None, Form()] = None,
    negative_prompt: Annotated[str, Form()] = "",
    steps: Annotated[int | None, Form(ge=1)] = None,
    guidance: Annotated[float | None, Form()] = None,
    scheduler: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    """Image-to-image on SDXL: the prompt redraws the image (``strength`` of 1 keeps
    nothing of it). Masks (inpainting) are not served: a ``mask`` is refused."""
    if size != "auto":
        raise InvalidParameter("size: an edit keeps the image's size; send auto", param="size")
    fields = _generate_fields({"prompt": prompt, "model": model, "output_format": output_format,
                               "quality": quality, "seed": seed, "strength": strength,
                               "negative_prompt": negative_prompt, "steps": steps,
                               "guidance": guidance, "scheduler": scheduler},
                              settings)  # fmt: skip
    data = await read_upload(image, settings)
    return await _images(request, runner, fields, data, n, response_format)


def _generate_fields(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """OpenAI's names in the generate task's terms: model -> checkpoint alias, size ->
    width and height, quality -> steps (unless steps are given)."""
    fields = {key: value for key, value in params.items() if value is not None}
    fields["task"], fields["format"] = "generate", fields.pop("output_format")
    if (model := fields.pop("model", None)) is not None:
        fields["checkpoint"] = _checkpoint(model, settings)
    size = fields.pop("size", "auto")
    if size != "auto":
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise InvalidParameter(f"size: '{size}' is not WIDTHxHEIGHT or auto", param="size")
        fields["width"], fields["height"] = int(width), int(height)
    quality = fields.pop("quality", "auto")
    if quality not in (*STEPS_OF_QUALITY, "auto"):
        raise InvalidParameter(f"quality: '{quality}' is not one of auto, low, medium, high, "
                               "standard, hd", param="quality")  # fmt: skip
    fields.setdefault("steps", STEPS_OF_QUALITY.get(quality, 30))
    return fields


def _checkpoint(model: str, settings: Settings) -> str:
    """An alias as given; a model name as the alias that maps to it."""
    if model in settings.diffusion_checkpoints:
        return model
    for alias, name in settings.diffusion_checkpoints.items():
        if name == model:
            return alias
    served = ", ".join(settings.diffusion_checkpoints) or "none"
    raise UnknownModel(f"model: '{model}' is not an SDXL checkpoint served here; "
                       f"aliases: {served}", param="model")  # fmt: skip


async def _images(
    request: Request, runner: RunnerDep, fields: dict[str, Any], data: bytes | None, n: int,
    response_format: str,
) -> dict[str, Any]:  # fmt: skip
    """``n`` images, the seeds counting up from the given one; as base64 or as URLs."""
    seed = fields.get("seed")
    runs = [runner.run(fields | ({"seed": seed + i} if seed is not None else {}), data,
                       image_to_image=data is not None) for i in range(n)]  # fmt: skip
    results: list[TaskResult] = list(await asyncio.gather(*runs))
    entries = [await _entry(request, result, response_format) for result in results]
    return {"created": int(time.time()), "data": entries}


async def _entry(request: Request, result: TaskResult, response_format: str) -> dict[str, Any]:
    seed = (result.texts or {}).get("generate", {}).get("seed")
    entry: dict[str, Any] = {"revised_prompt": None, "seed": seed}
    if response_format == "b64_json":
        return entry | {"b64_json": base64.b64encode(result.data).decode()}
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise NotConfigured(
            "response_format url keeps the images in the job storage, "
            "which is off here; ask for b64_json",
            param="response_format",
        )
    fmt = result.content_type.removeprefix("image/")
    return entry | {"url": await jobs.publish_image(result.data, fmt, str(request.base_url))}


@router.get(
    "/v1/images/files/{name}",
    response_class=Response,
    responses=IMAGE_CONTENT | errors(404),
)
async def read_image_file(
    name: Annotated[str, Path(pattern=IMAGE_NAME_PATTERN)], request: Request
) -> Response:
    """An image an images route answered with as a URL (file:// storage; on S3 the
    URL is presigned and goes to the bucket)."""
    jobs: JobService | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise NotConfigured("no job storage is configured")
    data, media_type = await jobs.published_image(name)
    return Response(data, media_type=media_type)
