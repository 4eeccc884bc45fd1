"""Unit tests never start Ray: ``ray.init`` fails loudly if anything tries."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:
        return

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move this test to integration/")

    monkeypatch.setattr(ray, "init", refuse)
