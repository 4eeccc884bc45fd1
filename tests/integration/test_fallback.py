"""The CPU fallback deployment through Serve (the hooks app has ``cpu_fallback`` on): it
runs, holds every tile model on CPU, and answers a tile request as the GPU deployment
would. The switch to it on a GPU's out-of-memory is tested with fake handles in
tests/unit/deployments/test_priority_wiring.py (a CPU cannot run out of GPU memory)."""

from __future__ import annotations

import numpy as np
import pytest

from services.models.runtime import EngineStatus
from services.models.tile_io import TileJob, TileOutput
from tests.integration.conftest import REAL_UPSCALER
from tests.utils.images import astronaut
from tests.utils.tiny_models import TINY_RRDB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_the_fallback_deployment_serves_the_tile_models_on_cpu(serve_url: str) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("TileFallback", app_name="pixserve-hooks")
    status: EngineStatus = handle.status.remote().result(timeout_s=120)
    assert status.device == "cpu" and status.dtype == "float32"
    assert {TINY_RRDB, REAL_UPSCALER} <= set(status.loaded)
    pixels = astronaut(16)
    output: TileOutput = handle.upscale.remote(TileJob(TINY_RRDB, pixels)).result(timeout_s=120)
    assert output.pixels is not None and output.pixels.shape == (64, 64, 3)
    assert output.pixels.dtype == np.uint8 and output.fallback is None  # the backend marks it
