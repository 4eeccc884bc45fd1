"""Response bodies of the public API, named ``<Thing>Public`` as they leave the
service, and the typed path and query values several routes share."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Path, Query
from pydantic import BaseModel

from services.jobs.store import JOB_ID_PATTERN, STREAM_ID_PATTERN
from services.platform import DeploymentReadiness

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="32 hex digits.")]
EntryId = Annotated[str, Path(pattern=STREAM_ID_PATTERN, description="A stream entry id.")]
Cursor = Annotated[float | None, Query(ge=0, allow_inf_nan=False)]  # a page's next_cursor
KeepMetadata = Annotated[bool, Form(description="Keep the input's EXIF (upright, with the "
                                    "output's size), ICC profile and XMP; stripped by "
                                    "default (EXIF can carry a location).")]  # fmt: skip


class ErrorDetail(BaseModel):
    """A machine-readable code and a message a person can act on."""

    code: str
    message: str


class ErrorPublic(BaseModel):
    """The one error envelope every 4xx/5xx carries."""

    error: ErrorDetail


# The error answers of the image routes, for their OpenAPI documentation.
Responses = dict[int | str, dict[str, object]]


def errors(*codes: int) -> Responses:
    """OpenAPI entries for error statuses, each with the error envelope."""
    return {code: {"model": ErrorPublic} for code in codes}


def json_errors(*codes: int | str) -> Responses:
    """The same for a route whose success is not JSON (an event stream): FastAPI would
    document its errors in the success's media type; they are JSON all the same."""
    ref = {"$ref": "#/components/schemas/ErrorPublic"}
    return {code: {"description": "Error", "content": {"application/json": {"schema": ref}}}
            for code in codes}  # fmt: skip


IMAGE_ERRORS = errors(400, 413, 415, 422, 503)
IMAGE_CONTENT: Responses = {200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}}
# what any route may answer: keys (401, 429), the body limit (413), validation (422), a
# platform bug (500, which the contract tests keep from happening), a retryable 503
COMMON_ERRORS = errors(401, 413, 422, 429, 500, 503)
JOB_ERRORS = errors(404, 409, 410, 415)
ADMIN_ERRORS = errors(403, 404)


class ModelPublic(BaseModel):
    """A declared model and whether the serving replicas have it loaded."""

    name: str
    task: str
    architecture: str
    scale: int
    license: str
    description: str
    state: Literal["loaded", "unloaded", "missing", "not_configured", "unknown"]
    detail: str | None = None


class OpenAIModelPublic(BaseModel):
    """A model in OpenAI's list shape (``client.models.list()``), with its task."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pixserve"
    task: str


class ModelListPublic(BaseModel):
    """pixserve's listing (every declared model and its state) and, beside it, OpenAI's
    (``object``/``data``: the models configured here)."""

    object: Literal["list"] = "list"
    data: list[OpenAIModelPublic]
    default_model: str
    default_denoise_model: str
    default_face_model: str
    default_face_detector: str
    models: list[ModelPublic]


class ReadinessPublic(BaseModel):
    ready: bool
    deployments: dict[str, DeploymentReadiness]
    job_store: DeploymentReadiness | None = None  # None where jobs are off


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"
