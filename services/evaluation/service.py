"""The evaluation's way through the service: a model's restoration is the same use case
a sync request runs (plan, deployment calls, encode), PNG in and PNG out."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from services.errors import InvalidParameter, PixserveError
from services.evaluation.references import Reference, as_rgb, fit
from services.evaluation.run import Candidate, Restore
from services.imaging.codec import decode_image, encode_image, image_limits
from services.pipelines.backend import TaskBackend
from services.pipelines.tasks import TaskContext, parse_task, plan_task

EVALUATED_TASKS = ("upscale", "denoise")  # image to image at a fixed factor


def candidates(names: list[str], context: TaskContext) -> list[Candidate]:
    """The named models, each checked as a request for it would be (declared, of a task
    an evaluation scores, served here), before any image runs."""
    if not names:
        raise InvalidParameter("name at least one model to evaluate", param="models")
    found = []
    for name in dict.fromkeys(names):
        try:
            spec = context.manifest.get(name)
            if spec.task not in EVALUATED_TASKS:
                kinds = " and ".join(EVALUATED_TASKS)
                raise InvalidParameter(f"'{name}' is a {spec.task} model; an evaluation "
                                       f"scores {kinds} models")  # fmt: skip
            plan_task(parse_task({"task": spec.task, "model": name}), context)  # served here?
        except PixserveError as exc:  # the field at fault is this route's ``models``
            raise type(exc)(exc.message, param="models") from None
        found.append(Candidate(name, spec.task, spec.scale))
    return found


def service_restore(context: TaskContext, backend: TaskBackend) -> Restore:
    """A model's restoration as a sync request runs it, at the model's own factor."""
    from services.pipelines.usecases import run_task

    async def restore(model: str, pixels: np.ndarray) -> np.ndarray:
        task = context.manifest.get(model).task
        plan = plan_task(parse_task({"task": task, "model": model, "format": "png"}),
                         context)  # fmt: skip
        data = await asyncio.to_thread(encode_image, pixels, "png")
        result = await run_task(plan, data, backend, context.settings)
        return await asyncio.to_thread(_rgb, result.data)

    return restore


def uploaded_references(
    uploads: list[tuple[str, bytes]], context: TaskContext, max_side: int
) -> list[Reference]:
    """Uploaded reference images, decoded under the upload limits, as RGB."""
    limits = image_limits(context.settings)
    references = []
    for index, (name, data) in enumerate(uploads):
        try:
            pixels = decode_image(data, limits).pixels
        except PixserveError as exc:  # its message names the problem, not the file
            raise type(exc)(f"{name}: {exc.message}", param="images") from None
        references.append(Reference(name or f"image-{index}", fit(as_rgb(pixels), max_side)))
    return references


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return as_rgb(np.asarray(image))
