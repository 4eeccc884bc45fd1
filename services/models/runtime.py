"""What every torch engine shares: device and dtype from settings, the per-process CUDA
memory cap from the replica's GPU share, memory readings, CUDA error counting for the
health check, and device work that stops when its caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from services.config import Settings

T = TypeVar("T")
HEALTH_ERROR_LIMIT = 3
# Tiles per forward pass when the setting is None. On CUDA a batch fills the device; on
# CPU oneDNN already spreads one tile over every core, and a batch's activations fall
# out of cache: the null x4 model ran 1.58x the bare model at 1 tile and 0.84x at 8
# (docs/benchmarks.md).
CUDA_TILE_BATCH, CPU_TILE_BATCH = 8, 1
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class EngineStatus:
    """What an engine holds: device, dtype, loaded models and why others are missing."""

    device: str
    dtype: str
    loaded: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    resting: list[str] = field(default_factory=list)  # unloaded at run time: load on use


def batch_buckets(limit: int) -> tuple[int, ...]:
    """Powers of two below ``limit``, and ``limit``: the batch sizes a compiled module
    runs at, so there are few compilations and a chunk is padded by less than itself."""
    sizes = [1]
    while sizes[-1] * 2 < limit:
        sizes.append(sizes[-1] * 2)
    return (*sizes, limit) if limit > 1 else (1,)


def allow_compiled_shapes(count: int) -> None:
    """Let dynamo keep ``count`` shape-specialised graphs per compiled module. Its
    default limit (8) is below what the tile engine warms (tile edges x batch buckets);
    past it, calls silently fall back to eager and the warm-up was for nothing."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, count)


class TorchRuntime:
    """Device, dtype and memory cap of one engine process."""

    def __init__(self, settings: Settings, gpu_share: float = 0.0) -> None:
        self.settings = settings
        # the setting, else the replica's GPU share, so replicas packed on one card
        # cannot starve each other (Ray's fractional GPUs do not isolate memory)
        self.memory_fraction = settings.gpu_memory_fraction or (
            gpu_share if 0 < gpu_share < 1 else None
        )
        self.device = resolve_device(settings)
        self.dtype = resolve_dtype(settings, self.device)
        self.cuda_errors = 0

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def tile_batch(self) -> int:
        """Tiles per forward pass: the setting, else the device's default."""
        return self.settings.tile_batch_size or (CUDA_TILE_BATCH if self.on_cuda
                                                 else CPU_TILE_BATCH)  # fmt: skip

    def apply_limits(self) -> None:
        """Thread count and CUDA memory cap; call once before loading models."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        if self.on_cuda and self.memory_fraction:
            torch.cuda.set_per_process_memory_fraction(self.memory_fraction)

    def gpu_memory(self) -> dict[str, float]:
        """Bytes of GPU memory this process uses, holds and may hold (empty on CPU)."""
        if not self.on_cuda:
            return {}
        total = torch.cuda.get_device_properties(self.device).total_memory
        return {
            "used": float(torch.cuda.memory_allocated(self.device)),
            "reserved": float(torch.cuda.memory_reserved(self.device)),
            "limit": float(total * (self.memory_fraction or 1.0)),
        }

    def release_after_oom(self) -> None:
        if self.on_cuda:
            torch.cuda.empty_cache()

    def count_error(self) -> None:
        """A RuntimeError from a forward pass: CUDA ones count towards the health check."""
        if self.on_cuda:
            self.cuda_errors += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Forward passes inside: a RuntimeError counts towards the health check (on
        CUDA), a success resets the count."""
        try:
            yield
        except RuntimeError:
            self.count_error()
            raise
        self.cuda_errors = 0

    def check_errors(self) -> None:
        """Raise once forward passes failed on CUDA ``HEALTH_ERROR_LIMIT`` times in a row."""
        if self.cuda_errors >= HEALTH_ERROR_LIMIT:
            raise RuntimeError(f"{self.cuda_errors} consecutive CUDA errors")


def resolve_device(settings: Settings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    if settings.precision != "auto":
        return _DTYPES[settings.precision]
    return torch.float16 if device.type == "cuda" else torch.float32


async def run_until_cancelled(work: Callable[[threading.Event], T]) -> T:
    """``work(stop)`` in a thread. If the caller is cancelled (client gone, deadline
    passed) ``stop`` is set and the thread is waited for before the cancellation goes on,
    so a replica's one-at-a-time slot is not freed while its device is still busy."""
    stop = threading.Event()
    running = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception):
            await running  # it ends at its next check of ``stop``
        raise
