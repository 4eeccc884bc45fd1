"""Which models an engine holds in memory, and loading or unloading them at run time.

An engine keeps its configured models by name; ``Residency`` adds what an operator
needs on top: each model's memory (its parameters and buffers) and last use, unloading
one to free its memory (the CUDA cache emptied, the process's heap trimmed), and
loading it again on its next request, so an unloaded model is resting, never broken.
Idle models unload after a timeout in the ``low`` memory mode.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import torch
from pydantic import BaseModel

from services.config import MemoryMode
from services.errors import PixserveError
from services.models.runtime import TorchRuntime

logger = logging.getLogger(__name__)


class ModelState(BaseModel):
    """One configured model on one replica."""

    name: str
    loaded: bool
    memory_bytes: int = 0  # its parameters and buffers, on whichever device
    last_used: float | None = None  # Unix time of its last request on this replica
    load_seconds: float | None = None
    detail: str | None = None  # why it is not loaded


def module_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of the parameters and buffers of every torch module in ``value`` (a module,
    or containers, dataclasses and pipelines holding modules), each tensor once."""
    seen = set() if seen is None else seen
    if id(value) in seen or value is None or isinstance(value, (str, bytes, int, float)):
        return 0
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        tensors = [t for t in (*value.parameters(), *value.buffers()) if id(t) not in seen]
    elif isinstance(value, torch.Tensor):
        tensors = [value]
    else:
        return sum(module_bytes(item, seen) for item in _members(value))
    seen.update(id(t) for t in tensors)
    return sum(t.numel() * t.element_size() for t in tensors)


def _members(value: Any) -> list[Any]:
    """What a container, a diffusers pipeline (its components) or an object holds."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple, set)):
        return list(value)
    components = getattr(value, "components", None)
    if isinstance(components, dict):
        return list(components.values())
    fields = getattr(value, "__dict__", None)
    return list(fields.values()) if isinstance(fields, dict) else []


def process_rss() -> int:
    """This process's resident memory in bytes (Linux's /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory(on_cuda: bool) -> None:
    """Give freed memory back: collect cycles, empty the CUDA cache, and trim glibc's
    heap (freed small blocks otherwise stay in the process's RSS)."""
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    if (name := ctypes.util.find_library("c")) is not None:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


class Residency:
    """Load, unload and last use of an engine's models. The engine gives three hooks:
    ``_held()`` (name -> what is loaded), ``_load_into(name)`` (load and keep it,
    raising ``PixserveError`` when it cannot) and ``_drop(name)``; ``configured_models()``
    names what it serves. It has a ``runtime`` and a ``missing`` map (model -> why not)."""

    runtime: TorchRuntime
    missing: dict[str, str]

    def __init__(self, memory_mode: MemoryMode = "balanced") -> None:
        self.last_used: dict[str, float] = {}
        self.unloaded: set[str] = set()  # unloaded at run time: loads on its next request
        self._residency = threading.RLock()
        self.memory_mode: MemoryMode = memory_mode

    # the engine's hooks

    def configured_models(self) -> list[str]:
        raise NotImplementedError

    def _held(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_into(self, name: str) -> None:
        raise NotImplementedError

    def _drop(self, name: str) -> None:
        raise NotImplementedError

    def _bring(self, name: str) -> None:
        """Load ``name`` and keep it; why it could not be is kept in ``missing``."""
        try:
            self._load_into(name)
        except PixserveError as exc:
            self.missing[name] = exc.message
            raise
        self.missing.pop(name, None)

    def load_configured(self) -> None:
        """Every configured model; one that fails is reported (``missing``), not fatal."""
        for name in self.configured_models():
            try:
                self._bring(name)
            except PixserveError as exc:
                logger.warning("%s not loaded: %s", name, exc.message)

    def _apply_memory_mode(self) -> None:
        """The engine's own part of a mode change (batch limits, compiling)."""

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """low: idle models unload (the replica's timer calls ``unload_idle``), and the
        engine keeps less per pass; high: every configured model loaded now."""
        self.memory_mode = mode
        if mode == "high":
            for name in self.configured_models():
                try:
                    self.load_model(name)
                except PixserveError as exc:  # its absence is already reported
                    logger.warning("%s not loaded for the high memory mode: %s", name,
                                   exc.message)  # fmt: skip
        self._apply_memory_mode()

    # what replicas and requests call

    def touch(self, name: str) -> None:
        """``name`` served a request now; an unloaded one is loaded first."""
        if name in self.unloaded:
            with self._residency:
                if name in self.unloaded:  # another request may have loaded it meanwhile
                    logger.info("loading %s again for a request", name)
                    self._bring(name)
                    self.unloaded.discard(name)
        self.last_used[name] = time.time()

    def load_model(self, name: str) -> None:
        """Load ``name`` now (already loaded: nothing to do)."""
        with self._residency:
            if name not in self._held():
                self._bring(name)
            self.unloaded.discard(name)

    def unload_model(self, name: str) -> bool:
        """Free ``name``'s memory; it loads again on its next request. False when it was
        not loaded."""
        with self._residency:
            if name not in self._held():
                return False
            self._drop(name)
            self.unloaded.add(name)
        release_memory(self.runtime.on_cuda)
        return True

    def unload_idle(self, idle_s: float, now: float | None = None) -> list[str]:
        """Unload every model unused for ``idle_s`` seconds (never used: since now)."""
        now = time.time() if now is None else now
        idle = [name for name in list(self._held())
                if now - self.last_used.setdefault(name, now) >= idle_s]  # fmt: skip
        return [name for name in idle if self.unload_model(name)]

    def model_states(self, missing: dict[str, str], load_seconds: dict[str, float]) -> list[
        ModelState
    ]:  # fmt: skip
        held, states = self._held(), []
        for name in _unique(self.configured_models()):
            resting = "unloaded: loads on its next request" if name in self.unloaded else None
            states.append(ModelState(
                name=name, loaded=name in held, memory_bytes=module_bytes(held.get(name)),
                last_used=self.last_used.get(name), load_seconds=load_seconds.get(name),
                detail=missing.get(name) or resting,
            ))  # fmt: skip
        return states


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
