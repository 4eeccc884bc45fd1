"""Shared fixtures: the tiny model store and settings pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.upscaler import UpscaleEngine
from tests.utils.tiny_models import TINY_COMPACT, TINY_RRDB, build_tiny_store


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-store")
    return root, build_tiny_store(root, faces=True, diffusion=True, vision=True, mesh=True)


@pytest.fixture
def tiny_settings(tiny_store: tuple[Path, Path]) -> Settings:
    root, manifest = tiny_store
    return Settings(
        model_store=root,
        extra_manifest=manifest,
        models=[TINY_RRDB, TINY_COMPACT],
        default_model=TINY_RRDB,
        tile_size=32,
        tile_pad=20,
    )


@pytest.fixture
def tiny_engine(tiny_settings: Settings) -> UpscaleEngine:
    """An upscale engine with the tiny models loaded."""
    engine = UpscaleEngine(
        tiny_settings,
        ModelStore(tiny_settings.model_store, load_manifest(tiny_settings.extra_manifest)),
    )
    engine.load()
    return engine
