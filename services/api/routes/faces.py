"""``POST /v1/restore/face``: faces restored (GFPGAN, CodeFormer) and pasted back onto
the image, whose background may be upscaled by a Real-ESRGAN model at the same time;
``POST /v1/detect/faces``: the faces' boxes, scores and landmarks as JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.api.deps import RunnerDep, SettingsDep, read_upload, task_response
from services.api.schemas import IMAGE_CONTENT, IMAGE_ERRORS, KeepMetadata

router = APIRouter(tags=["faces"])


@router.post(
    "/v1/restore/face",
    response_class=Response,
    responses=IMAGE_CONTENT | IMAGE_ERRORS,
)
async def create_face_restoration(
    settings: SettingsDep,
    runner: RunnerDep,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    model: Annotated[str | None, Form(description="A face model; see GET /v1/models.")] = None,
    detector: Annotated[str | None, Form(description="A face detector (task detect).")] = None,
    weight: Annotated[
        float, Form(description="Blend of restored and original face: 1 fully restored.")
    ] = 1.0,
    fidelity: Annotated[
        float, Form(description="CodeFormer: 0 best quality, 1 closest to the input.")
    ] = 0.5,
    upscale: Annotated[int, Form(description="Background scale 1-4 (Real-ESRGAN).")] = 1,
    background_model: Annotated[
        str | None, Form(description="Upscale model for the background when upscale > 1.")
    ] = None,
    only_center_face: Annotated[bool, Form(description="Restore the central face only.")] = False,
    max_faces: Annotated[
        int | None,
        Form(
            description="Restore at most this many (largest); default 10, or the "
            "server's max_faces where that is lower."
        ),
    ] = None,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WEBP quality.")] = 90,
    keep_metadata: KeepMetadata = False,
) -> Response:
    """Restore every face (or the central one); an image without a face comes back as
    it went in (upscaled if asked) with ``X-Pixserve-Faces: 0``."""
    fields = {"task": "restore_face", "model": model, "detector": detector, "weight": weight,
              "fidelity": fidelity, "upscale": upscale, "background_model": background_model,
              "only_center_face": only_center_face, "max_faces": max_faces,
              "format": output_format, "quality": quality,
              "keep_metadata": keep_metadata}  # fmt: skip
    return task_response(await runner.run(fields, await read_upload(image, settings)))


class DetectedFace(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1 in pixels.")
    score: float = Field(description="The detector's confidence, 0-1.")
    landmarks: list[list[float]] = Field(
        description="Five (x, y): left eye, right eye, nose, left and right mouth corner."
    )


class DetectedFaces(BaseModel):
    detector: str
    width: int
    height: int
    faces: list[DetectedFace] = Field(description="Most confident first.")


@router.post("/v1/detect/faces", responses=IMAGE_ERRORS)
async def create_face_detection(
    settings: SettingsDep,
    runner: RunnerDep,
    response: Response,
    image: Annotated[UploadFile, File(description="The image: PNG, JPEG, WEBP, BMP, TIFF, GIF.")],
    detector: Annotated[str | None, Form(description="A face detector (task detect).")] = None,
    min_score: Annotated[
        float, Form(ge=0, le=1, description="Leave out faces scored under it.")
    ] = 0.0,
) -> DetectedFaces:
    """Every face in the image: its box, score and five landmarks (no image comes back;
    the ``blur-faces`` preset anonymises them)."""
    fields = {"task": "detect_faces", "detector": detector, "min_score": min_score}
    result = await runner.run(fields, await read_upload(image, settings))
    response.headers.update(result.headers)  # X-Pixserve-Faces
    return DetectedFaces(**(result.texts or {}))
