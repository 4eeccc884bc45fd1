"""The face engine: RetinaFace detectors and face restoration models (GFPGAN through
spandrel, CodeFormer through spandrel_extra_arches), with no serving code.

``detect()`` runs on one image; ``restore()`` takes aligned 512x512 crops from any
number of requests and runs them through the model in chunks of ``face_batch_size``,
so the faces of concurrent requests share forward passes. On CUDA out-of-memory the
chunk is halved down to one face before the request fails. With ``compile`` on CUDA,
GFPGAN is compiled for a few fixed batch sizes (chunks are padded up to the next),
each warmed at load; CodeFormer stays eager, since its forward branches on the
fidelity weight, a Python float a compiled graph would be rebuilt for.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import spandrel
import torch

from services.config import Settings
from services.errors import EngineOutOfMemory, ModelNotReady, NotConfigured, PixserveError
from services.imaging.faces import Face
from services.models.residency import Residency
from services.models.retinaface import RetinaFaceDetector, load_retinaface
from services.models.runtime import (
    EngineStatus,
    TorchRuntime,
    allow_compiled_shapes,
    batch_buckets,
)
from services.models.store import ModelStore, fetch_hint

logger = logging.getLogger(__name__)
_extra_arches_installed = False


@dataclass(frozen=True)
class FaceCrops:
    """One request's aligned faces for one model: (N, 512, 512, 3) float32 RGB in [0, 1].
    ``fidelity`` is CodeFormer's weight (0: best quality, 1: closest to the input)."""

    model: str
    crops: np.ndarray
    fidelity: float = 0.5
    request_id: str = ""
    traceparent: str | None = None


@dataclass
class FaceModel:
    """A loaded restorer: its module, whether it takes a fidelity weight, its chunk size."""

    module: torch.nn.Module
    architecture: str
    dtype: torch.dtype
    batch_limit: int
    load_seconds: float
    buckets: tuple[int, ...] = ()  # batch sizes a compiled module runs at (empty: any)


@dataclass(frozen=True)
class FacePass:
    """A record of one batched restoration: faces, requests, time."""

    model: str
    faces: int
    request_ids: tuple[str, ...]
    seconds: float
    capacity: int


@dataclass
class FaceEngine(Residency):
    """Loads the configured detectors and face models; detects and restores."""

    settings: Settings
    store: ModelStore
    gpu_share: float = 0.0
    detectors: dict[str, RetinaFaceDetector] = field(default_factory=dict)
    models: dict[str, FaceModel] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    passes: deque[FacePass] = field(default_factory=lambda: deque(maxlen=256))
    on_pass: Callable[[FacePass], None] | None = None  # metrics hook

    def __post_init__(self) -> None:
        Residency.__init__(self, self.settings.memory_mode)
        self.runtime = TorchRuntime(self.settings, self.gpu_share)

    def load(self) -> None:
        """Load every configured detector and model; a missing one is recorded, not fatal."""
        self.runtime.apply_limits()
        self.load_configured()

    def detect(self, detector: str, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, found by the named detector."""
        self._use(detector)
        found = self.detectors.get(detector)
        if found is None:
            raise self._not_loaded(detector, "face_detectors")
        return found.detect(image)

    def restore(self, requests: list[FaceCrops]) -> list[np.ndarray | PixserveError]:
        """Restore each request's crops; errors are returned per request, not raised."""
        results: list[np.ndarray | PixserveError] = [np.empty(0, np.float32)] * len(requests)
        groups: dict[tuple[str, float], list[int]] = {}
        for index, request in enumerate(requests):
            model = self.models.get(request.model)
            fidelity = request.fidelity if model and model.architecture == "CodeFormer" else 0.0
            groups.setdefault((request.model, fidelity), []).append(index)
        for (name, fidelity), members in groups.items():
            outputs: list[np.ndarray | PixserveError]
            try:
                outputs = self._restore_group(name, fidelity, [requests[i] for i in members])
            except PixserveError as exc:
                outputs = [exc] * len(members)
            for index, output in zip(members, outputs, strict=True):
                results[index] = output
        return results

    def status(self) -> EngineStatus:
        return EngineStatus(
            device=str(self.runtime.device),
            dtype=str(self.runtime.dtype).removeprefix("torch."),
            loaded={name: 1 for name in [*self.detectors, *self.models]},
            missing=dict(self.missing),
            load_seconds=dict(self.load_seconds),
            resting=sorted(self.unloaded),
        )

    def gpu_memory(self) -> dict[str, float]:
        return self.runtime.gpu_memory()

    def check_health(self) -> None:
        """Repeated CUDA errors fail; each detector runs on a small blank probe (the
        restorers are too heavy to probe every few seconds)."""
        self.runtime.check_errors()
        probe = np.zeros((64, 64, 3), np.uint8)
        for detector in self.detectors.values():
            detector.detect(probe)

    def configured_models(self) -> list[str]:
        return [*self.settings.face_detectors, *self.settings.face_models]

    def _held(self) -> dict[str, Any]:
        return {**self.detectors, **self.models}

    def _load_into(self, name: str) -> None:
        started = time.perf_counter()
        if name in self.settings.face_detectors:
            self._load_detector(name)
        else:
            self._load_model(name)
        self.load_seconds[name] = time.perf_counter() - started

    def _drop(self, name: str) -> None:
        self.detectors.pop(name, None)
        self.models.pop(name, None)

    def _use(self, name: str) -> None:
        """A request for ``name``: loaded again first if it was unloaded."""
        if name in self.configured_models():
            self.touch(name)

    def _load_detector(self, name: str) -> None:
        spec = self.store.manifest.for_task(name, "detect")
        network = load_retinaface(self.store.locate(spec.name))
        self.detectors[name] = RetinaFaceDetector(
            network, self.runtime.device, self.settings.face_confidence
        )

    def _load_model(self, name: str) -> None:
        spec = self.store.manifest.for_task(name, "face")
        _install_extra_arches()
        path = self.store.locate(name)
        started = time.perf_counter()
        descriptor = spandrel.ModelLoader(device=self.runtime.device).load_from_file(path)
        if descriptor.purpose != "FaceSR" or descriptor.architecture.id != spec.architecture:
            raise ModelNotReady(f"{path.name} is a {descriptor.architecture.id} model; the "
                                f"manifest says {spec.architecture}")  # fmt: skip
        dtype = self.runtime.dtype
        if dtype == torch.float16 and not descriptor.supports_half:  # GFPGAN, CodeFormer
            dtype = torch.bfloat16 if descriptor.supports_bfloat16 else torch.float32
        module = descriptor.model.eval().to(self.runtime.device, dtype)
        model = FaceModel(module, spec.architecture, dtype, self.settings.face_batch_size, 0.0)
        if self.settings.compile and self.runtime.on_cuda and spec.architecture == "GFPGAN":
            self._compile(model)
        model.load_seconds = time.perf_counter() - started
        self.models[name] = model

    def _compile(self, model: FaceModel) -> None:
        """Compile for each bucket's batch size and run each once, so no request waits
        for a compilation."""
        model.module = torch.compile(model.module, dynamic=False)  # type: ignore[assignment]
        model.buckets = batch_buckets(model.batch_limit)
        allow_compiled_shapes(len(model.buckets))
        for size in model.buckets:
            self._forward(model, np.zeros((size, 512, 512, 3), np.float32), 0.0)

    def _not_loaded(self, name: str, setting: str) -> PixserveError:
        """Why ``name`` cannot run here: missing from the store, or not configured."""
        if name in self.missing:
            return ModelNotReady(self.missing[name])
        loads = ", ".join(getattr(self.settings, setting)) or "none"
        hint = fetch_hint(self.store.manifest.get(name))
        return NotConfigured(
            f"'{name}' is not loaded by the FaceRestorer (it loads: {loads}); "
            f"add it to PIXSERVE_{setting.upper()} (the {setting} setting) and fetch it "
            f"with `{hint}`"
        )

    def _restore_group(
        self, name: str, fidelity: float, members: list[FaceCrops]
    ) -> list[np.ndarray | PixserveError]:
        self._use(name)
        model = self.models.get(name)
        if model is None:
            raise self._not_loaded(name, "face_models")
        stack = np.concatenate([member.crops for member in members])
        started = time.perf_counter()
        output = self._run_chunks(model, stack, fidelity)
        chunks = -(-len(stack) // model.batch_limit) if len(stack) else 0
        record = FacePass(name, len(stack), tuple(m.request_id for m in members),
                          time.perf_counter() - started, chunks * model.batch_limit)  # fmt: skip
        self.passes.append(record)
        if self.on_pass is not None:
            self.on_pass(record)
        bounds = np.cumsum([len(member.crops) for member in members])[:-1]
        return list(np.split(output, bounds))

    def _run_chunks(self, model: FaceModel, stack: np.ndarray, fidelity: float) -> np.ndarray:
        outputs: list[np.ndarray] = [np.empty((0, *stack.shape[1:]), np.float32)]
        start = 0
        while start < len(stack):
            chunk = stack[start : start + model.batch_limit]
            try:
                outputs.append(self._forward(model, chunk, fidelity))
            except torch.OutOfMemoryError as exc:
                self.runtime.release_after_oom()
                if model.batch_limit == 1:
                    raise EngineOutOfMemory("out of GPU memory restoring one face") from exc
                model.batch_limit = max(1, min(model.batch_limit, len(chunk)) // 2)
                logger.warning("CUDA out of memory; face batch lowered to %d", model.batch_limit)
                continue
            start += len(chunk)
        return np.concatenate(outputs)

    def _forward(self, model: FaceModel, crops: np.ndarray, fidelity: float) -> np.ndarray:
        """Crops in [0, 1] NHWC -> the models' [-1, 1] NCHW -> restored crops in [0, 1]."""
        count = len(crops)
        padded = next((size for size in model.buckets if size >= count), count)
        if padded > count:  # a compiled module's batch size; the extra faces are blank
            crops = np.concatenate([crops, np.zeros((padded - count, *crops.shape[1:]),
                                                    crops.dtype)])  # fmt: skip
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(crops).permute(0, 3, 1, 2)
                tensor = tensor.to(self.runtime.device, model.dtype).contiguous() * 2 - 1
                if model.architecture == "CodeFormer":
                    output = model.module(tensor, weight=fidelity)[0]
                else:  # fixed noise (not redrawn per call): the same face, the same result
                    output = model.module(tensor, return_rgb=False, randomize_noise=False)[0]
                output = ((output[:count].float() + 1) / 2).clamp_(0, 1).permute(0, 2, 3, 1)
                result = output.cpu().numpy()
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            self.runtime.count_error()
            raise
        self.runtime.cuda_errors = 0
        return np.ascontiguousarray(result, np.float32)


def _install_extra_arches() -> None:
    """Register CodeFormer (spandrel_extra_arches: non-commercial licences) once."""
    global _extra_arches_installed  # noqa: PLW0603 (spandrel's registry is process-wide)
    if not _extra_arches_installed:
        import spandrel_extra_arches

        spandrel_extra_arches.install()
        _extra_arches_installed = True
