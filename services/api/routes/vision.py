"""Vision: ``POST /v1/caption`` (caption, tags, NSFW score of one image); vision
questions are OpenAI's chat completions (routes/openai.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field

from services.api.deps import RunnerDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS

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
