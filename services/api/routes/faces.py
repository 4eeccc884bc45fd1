"""``POST /v1/restore/face``: faces restored (GFPGAN, CodeFormer) and pasted back onto
the image, whose background may be upscaled by a Real-ESRGAN model at the same time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from services.api.deps import BackendDep, ManifestDep, MetricsDep, SettingsDep, read_upload
from services.api.schemas import IMAGE_ERRORS
from services.imaging.codec import CONTENT_TYPES, decode_image, encode_image
from services.pipelines.presets import face_options
from services.pipelines.upscale import encoder_options, image_limits
from services.telemetry.metrics import record_image
from services.telemetry.tracing import tracer

router = APIRouter(tags=["faces"])


@router.post(
    "/v1/restore/face",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        **IMAGE_ERRORS,
    },
)
async def create_face_restoration(
    settings: SettingsDep,
    manifest: ManifestDep,
    backend: BackendDep,
    metrics: MetricsDep,
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
    max_faces: Annotated[int, Form(description="Restore at most this many (largest).")] = 10,
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form(alias="format")] = "png",
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WEBP quality.")] = 90,
) -> Response:
    """Restore every face (or the central one); an image without a face comes back as
    it went in (upscaled if asked) with ``X-Pixserve-Faces: 0``."""
    data = await read_upload(image, settings)
    params = {"model": model, "detector": detector, "weight": weight, "fidelity": fidelity,
              "upscale": upscale, "background_model": background_model,
              "only_center_face": only_center_face, "max_faces": max_faces}  # fmt: skip
    options = face_options(params, manifest, settings)
    with tracer.start_as_current_span("pixserve.restore_face") as span:
        started = time.perf_counter()
        decoded = await asyncio.to_thread(decode_image, data, image_limits(settings))
        decoding = time.perf_counter()
        result = await backend.restore_faces(decoded, options)
        restoring = time.perf_counter()
        encoded = await asyncio.to_thread(encode_image, result.pixels, output_format, quality,
                                          encoder_options(settings))  # fmt: skip
        height, width = result.pixels.shape[:2]
        span.set_attributes({
            "pixserve.model": options.model, "pixserve.faces": len(result.faces),
            "pixserve.input_size": f"{decoded.width}x{decoded.height}",
            "pixserve.output_size": f"{width}x{height}",
        })  # fmt: skip
    steps = {"decode": decoding - started, "restore_face": restoring - decoding,
             "encode": time.perf_counter() - restoring}  # fmt: skip
    record_image(metrics, options.model, "sync", (decoded.width, decoded.height), (width, height),
                 steps)  # fmt: skip
    boxes = [[*face.box, face.score] for face in result.faces]
    headers = {
        "X-Pixserve-Model": options.model,
        "X-Pixserve-Faces": str(len(result.faces)),
        "X-Pixserve-Faces-Detected": str(result.detected),
        "X-Pixserve-Face-Boxes": json.dumps(boxes, separators=(",", ":")),
        "X-Pixserve-Input-Size": f"{decoded.width}x{decoded.height}",
        "X-Pixserve-Output-Size": f"{width}x{height}",
    }
    return Response(encoded, media_type=CONTENT_TYPES[output_format], headers=headers)
