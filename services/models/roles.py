"""What the engines whose models each fill a role named by a setting share (Vision:
caption, tags, nsfw, vqa; Mesher: mesh, depth, segment): loading each configured one,
remembering why one did not load, and reporting status, memory and health."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from services.config import Settings
from services.errors import ModelNotReady, NotConfigured
from services.models.residency import Residency
from services.models.runtime import EngineStatus, TorchRuntime
from services.models.store import ModelStore

logger = logging.getLogger(__name__)


@dataclass
class RoleEngine(Residency):
    """Models by role; a subclass names its roles (role -> setting) and loads one."""

    roles: ClassVar[dict[str, str]]
    settings: Settings
    store: ModelStore
    gpu_share: float = 0.0
    models: dict[str, Any] = field(default_factory=dict)  # role -> what ``_load`` gave
    missing: dict[str, str] = field(default_factory=dict)  # model -> why it is not loaded
    load_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Residency.__init__(self, self.settings.memory_mode)
        self.runtime = TorchRuntime(self.settings, self.gpu_share)
        self.dtype = self.runtime.dtype

    def load(self) -> None:
        """Every configured role's model; one that fails is reported, not fatal."""
        self.runtime.apply_limits()
        self.load_configured()  # absent, or not a model for its role: reported

    def status(self) -> EngineStatus:
        names = {getattr(self.settings, self.roles[role]): 1 for role in self.models}
        return EngineStatus(str(self.runtime.device), str(self.dtype).removeprefix("torch."),
                            names, dict(self.missing), dict(self.load_seconds),
                            sorted(self.unloaded))  # fmt: skip

    def gpu_memory(self) -> dict[str, float]:
        return self.runtime.gpu_memory()

    def check_health(self) -> None:
        self.runtime.check_errors()

    def _model(self, role: str) -> Any:
        """The role's model, or why there is none: not configured (501, naming the
        setting), or configured but not loaded (503, with the reason it was not)."""
        setting = self.roles[role]
        name = getattr(self.settings, setting)
        if name is not None:
            self.touch(name)  # loads it again if it was unloaded
        if role in self.models:
            return self.models[role]
        if name is None:
            raise NotConfigured(f"no {role} model is configured: set {setting} and fetch the "
                                "model with `pixserve models pull NAME`")  # fmt: skip
        raise ModelNotReady(self.missing.get(name) or f"{name} is not loaded")

    def _has(self, role: str) -> bool:
        """The role's model is loaded, or unloaded at run time (it loads on use)."""
        return role in self.models or getattr(self.settings, self.roles[role]) in self.unloaded

    def configured_models(self) -> list[str]:
        names = (getattr(self.settings, setting) for setting in self.roles.values())
        return list(dict.fromkeys(name for name in names if name is not None))

    def _held(self) -> dict[str, Any]:
        return {getattr(self.settings, self.roles[role]): model
                for role, model in self.models.items()}  # fmt: skip

    def _load_into(self, name: str) -> None:
        """Load ``name`` into every role it is configured for."""
        started = time.perf_counter()
        for role, setting in self.roles.items():
            if getattr(self.settings, setting) == name:
                self.models[role] = self._load(role, name)
        self.load_seconds[name] = time.perf_counter() - started

    def _drop(self, name: str) -> None:
        for role in [r for r in self.models if getattr(self.settings, self.roles[r]) == name]:
            del self.models[role]

    def _load(self, role: str, name: str) -> Any:
        raise NotImplementedError
