"""``POST /v1/generate``: SDXL text-to-image, or image-to-image when an image is sent,
on the Diffusion deployment; the safety checker's verdict comes back as a header."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_CONTENT, IMAGE_ERRORS

router = APIRouter(tags=["generate"])


@router.post(
    "/v1/generate",
    response_class=Response,
    responses=IMAGE_CONTENT | IMAGE_ERRORS,
)
async def create_generation(
    settings: SettingsDep,
    runner: RunnerDep,
    prompt: Annotated[str, Form(description="What to draw (CLIP reads 77 tokens).")],
    image: Annotated[UploadFile | None, File(description="A start image: image-to-image.")] = None,
    negative_prompt: Annotated[str, Form(description="What to avoid.")] = "",
    checkpoint: Annotated[
        str | None, Form(description="Checkpoint alias (realism, anime, artistic...).")
    ] = None,
    width: Annotated[int, Form(description="Multiple of 8 (text-to-image).")] = 1024,
    height: Annotated[int, Form(description="Multiple of 8 (text-to-image).")] = 1024,
    steps: Annotated[int, Form(description="Denoising steps.")] = 30,
    guidance: Annotated[float, Form(description="Classifier-free guidance scale.")] = 5.0,
    scheduler: Annotated[
        str, Form(description="euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lightning, turbo")
    ] = "euler",
    seed: Annotated[int | None, Form(description="Same seed, same image.")] = None,
    strength: Annotated[float, Form(description="Image-to-image: how far to go (0-1].")] = 0.6,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100)] = 90,
) -> Response:
    """One image; ``X-Pixserve-Seed`` reproduces it, ``X-Pixserve-NSFW: true`` says the
    safety checker blacked it out."""
    fields = {"task": "generate", "prompt": prompt, "negative_prompt": negative_prompt,
              "checkpoint": checkpoint, "width": width, "height": height, "steps": steps,
              "guidance": guidance, "scheduler": scheduler, "seed": seed, "strength": strength,
              "format": output_format, "quality": quality}  # fmt: skip
    data = None if image is None else await read_upload(image, settings)
    return task_response(await runner.run(fields, data, image_to_image=image is not None))
