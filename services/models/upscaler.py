"""The tile engine: image-to-image models loaded through spandrel, batched over tiles.

It serves the Upscaler (Real-ESRGAN) and the Denoiser (SCUNet, DnCNN: scale 1) alike.

A plain class with no serving code: ``load()`` once, then ``predict()`` on a list of
tile stacks from any number of requests. Tiles of the same model and size are
concatenated and run in chunks of ``tile_batch_size``, so one forward pass can hold
tiles of several images. On CUDA: fp16/bf16, channels_last, optional torch.compile
warmed at load, a per-process memory cap, and on out-of-memory the chunk is halved
and retried before the request fails.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import spandrel
import torch

from services.config import Settings
from services.errors import EngineOutOfMemory, ModelNotReady, PixserveError
from services.models.runtime import TorchRuntime
from services.models.store import ModelStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileRequest:
    """One request's tiles for one model: an (N, 3, S, S) float32 stack in [0, 1]."""

    model: str
    tiles: np.ndarray
    request_id: str = ""
    traceparent: str | None = None  # the caller's span, linked from the batch's span


@dataclass(frozen=True)
class ForwardPass:
    """A record of one forward pass: how many tiles, from how many requests."""

    model: str
    tiles: int
    request_ids: tuple[str, ...]
    tile_size: int
    seconds: float
    capacity: int = 0  # tiles the pass's chunks could have held (for the fill ratio)


@dataclass
class LoadedModel:
    """A ready model: the module, its scale and how big a chunk it currently takes.

    ``eager`` is the same weights without torch.compile, for the health probe, whose
    odd shape would otherwise make a shape-specialised compiled module recompile.
    """

    module: torch.nn.Module
    eager: torch.nn.Module
    scale: int
    batch_limit: int
    load_seconds: float
    minimum: int = 0  # spandrel's size requirements: inputs are padded to meet them
    multiple_of: int = 1


@dataclass
class EngineStatus:
    """What the engine holds: device, dtype, loaded models and why others are missing."""

    device: str
    dtype: str
    loaded: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)


class UpscaleEngine:
    """Loads the configured models and runs batches of tiles through them."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        models: list[str] | None = None,
        gpu_share: float = 0.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.model_names = settings.models if models is None else models
        self.runtime = TorchRuntime(settings, gpu_share)
        self.memory_fraction = self.runtime.memory_fraction
        self.device, self.dtype = self.runtime.device, self.runtime.dtype
        self.models: dict[str, LoadedModel] = {}
        self.missing: dict[str, str] = {}
        self.passes: deque[ForwardPass] = deque(maxlen=256)
        self.on_pass: Callable[[ForwardPass], None] | None = None  # metrics hook

    def load(self) -> None:
        """Load every model named in settings; a missing one is recorded, not fatal."""
        self.runtime.apply_limits()
        for name in self.model_names:
            try:
                self.models[name] = self._load_one(name)
                self.missing.pop(name, None)
            except PixserveError as exc:
                logger.warning("model %s not loaded: %s", name, exc.message)
                self.missing[name] = exc.message

    def predict(self, requests: list[TileRequest]) -> list[np.ndarray | PixserveError]:
        """Upscale each request's tiles; errors are returned per request, not raised."""
        results: list[np.ndarray | PixserveError] = [np.empty(0, np.float32) for _ in requests]
        for (model, _), members in _group(requests).items():
            outputs: list[np.ndarray | PixserveError]
            try:
                outputs = self._run_group(model, [requests[i] for i in members])
            except PixserveError as exc:
                outputs = [exc] * len(members)
            for index, output in zip(members, outputs, strict=True):
                results[index] = output
        return results

    def status(self) -> EngineStatus:
        return EngineStatus(
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            loaded={name: loaded.scale for name, loaded in self.models.items()},
            missing=dict(self.missing),
            load_seconds={name: loaded.load_seconds for name, loaded in self.models.items()},
        )

    def gpu_memory(self) -> dict[str, float]:
        """Bytes of GPU memory this process uses, holds and may hold (empty on CPU)."""
        return self.runtime.gpu_memory()

    def check_health(self) -> None:
        """Raise when the device no longer computes, so Serve replaces this replica.

        Repeated CUDA errors fail at once; otherwise every loaded model runs a tiny
        probe (8x8 px), which catches a wedged device or corrupted module cheaply.
        """
        self.runtime.check_errors()
        probe = np.zeros((1, 3, 8, 8), np.float32)
        for name, loaded in self.models.items():
            output = self._forward(loaded, probe, loaded.eager)
            if output.shape != (1, 3, 8 * loaded.scale, 8 * loaded.scale):
                raise RuntimeError(f"{name}: health probe returned shape {output.shape}")

    def _load_one(self, name: str) -> LoadedModel:
        spec = self.store.manifest.get(name)
        path = self.store.locate(name)
        started = time.perf_counter()
        descriptor = spandrel.ModelLoader(device=self.device).load_from_file(path)
        if descriptor.scale != spec.scale:
            raise ModelNotReady(
                f"{path.name} is a x{descriptor.scale} model; the manifest says x{spec.scale}"
            )
        if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
            raise ModelNotReady(f"{path.name} is not an RGB model ({descriptor.input_channels} "
                                f"channels in, {descriptor.output_channels} out)")  # fmt: skip
        eager = descriptor.model.eval().to(self.device, self.dtype)
        module = eager
        needs = descriptor.size_requirements
        if self.device.type == "cuda":
            eager = module = eager.to(memory_format=torch.channels_last)
            if self.settings.compile:
                module = self._compile(eager, needs.minimum, needs.multiple_of)
        batch = self.settings.tile_batch_size
        return LoadedModel(module, eager, spec.scale, batch, time.perf_counter() - started,
                           needs.minimum, needs.multiple_of)  # fmt: skip

    def _compile(self, module: torch.nn.Module, minimum: int, multiple_of: int) -> torch.nn.Module:
        """Compile, then warm up at the serving tile shape so requests never pay for it."""
        compiled: torch.nn.Module = torch.compile(module, dynamic=False)  # type: ignore[assignment]
        size = self.settings.tile_size + 2 * self.settings.tile_pad
        warm = np.zeros((self.settings.tile_batch_size, 3, size, size), np.float32)
        with torch.inference_mode():
            tensor = _pad_to(torch.from_numpy(warm).to(self.device, self.dtype), minimum,
                             multiple_of).contiguous(memory_format=torch.channels_last)  # fmt: skip
            compiled(tensor)
        return compiled

    def _run_group(
        self, model: str, members: list[TileRequest]
    ) -> list[np.ndarray | PixserveError]:
        loaded = self.models.get(model)
        if loaded is None:
            reason = self.missing.get(model) or (
                f"model '{model}' is not configured on this deployment (it loads "
                f"{', '.join(self.model_names) or 'none'}): add it to the settings' model "
                f"list and fetch it with `pixserve models pull {model}`"
            )
            raise ModelNotReady(reason)
        stack = np.concatenate([member.tiles for member in members])
        started = time.perf_counter()
        output = self._run_chunks(loaded, stack)
        chunks = -(-len(stack) // loaded.batch_limit)
        record = ForwardPass(
            model,
            len(stack),
            tuple(member.request_id for member in members),
            int(stack.shape[-1]),
            time.perf_counter() - started,
            chunks * loaded.batch_limit,
        )
        self.passes.append(record)
        if self.on_pass is not None:
            self.on_pass(record)
        bounds = np.cumsum([len(member.tiles) for member in members])[:-1]
        return list(np.split(output, bounds))

    def _run_chunks(self, loaded: LoadedModel, stack: np.ndarray) -> np.ndarray:
        """Run in chunks; on CUDA OOM halve the chunk and retry, down to one tile."""
        outputs: list[np.ndarray] = []
        start = 0
        while start < len(stack):
            chunk = stack[start : start + loaded.batch_limit]
            try:
                outputs.append(self._forward(loaded, chunk))
            except torch.OutOfMemoryError as exc:
                self._shrink_after_oom(loaded, exc)
                continue
            start += len(chunk)
        return np.concatenate(outputs)

    def _shrink_after_oom(self, loaded: LoadedModel, exc: Exception) -> None:
        self.runtime.release_after_oom()
        if loaded.batch_limit == 1:
            raise EngineOutOfMemory(
                "out of GPU memory even at one tile per pass; lower tile_size"
            ) from exc
        loaded.batch_limit = max(1, loaded.batch_limit // 2)
        logger.warning("CUDA out of memory; tile batch lowered to %d", loaded.batch_limit)

    def _forward(
        self, loaded: LoadedModel, batch: np.ndarray, module: torch.nn.Module | None = None
    ) -> np.ndarray:
        """One forward pass; the batch is padded (edge pixels repeated) to the model's
        size requirements and the padding cropped off the result."""
        height, width = batch.shape[-2:]
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(self.device, self.dtype)
                tensor = _pad_to(tensor, loaded.minimum, loaded.multiple_of)
                if self.device.type == "cuda":
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                output = (module or loaded.module)(tensor)
                output = output[..., : height * loaded.scale, : width * loaded.scale]
                result = output.clamp_(0.0, 1.0).float().cpu().numpy()
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            self.runtime.count_error()
            raise
        self.runtime.cuda_errors = 0
        return np.asarray(result)


def _pad_to(tensor: torch.Tensor, minimum: int, multiple_of: int) -> torch.Tensor:
    """Pad bottom and right so each side is >= ``minimum`` and a multiple of ``multiple_of``."""
    height, width = tensor.shape[-2:]

    def target(side: int) -> int:
        side = max(side, minimum)
        return -(-side // multiple_of) * multiple_of

    extra_h, extra_w = target(height) - height, target(width) - width
    if not extra_h and not extra_w:
        return tensor
    return torch.nn.functional.pad(tensor, (0, extra_w, 0, extra_h), mode="replicate")


def _group(requests: list[TileRequest]) -> dict[tuple[str, tuple[int, ...]], list[int]]:
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault((request.model, request.tiles.shape[1:]), []).append(index)
    return groups


class EngineBackend:
    """Runs tiles on an in-process engine: the pipeline's backend without Serve.

    Used by the benchmark's engine path and by tests; the service uses the Serve
    handle backend instead.
    """

    def __init__(self, engine: UpscaleEngine) -> None:
        self.engine = engine

    async def upscale_tiles(self, model: str, tiles: np.ndarray) -> np.ndarray:
        (result,) = self.engine.predict([TileRequest(model, tiles)])
        if isinstance(result, PixserveError):
            raise result
        return result
