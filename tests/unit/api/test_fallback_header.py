"""A request the GPU deployment could not hold and the CPU fallback answered says so in
``X-Pixserve-Fallback``; one that ran where it was sent has no such header."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient

from services.api.app import create_api
from services.config import Settings
from services.models.tile_io import TileJob, TileOutput
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode


class FellBack(FakeBackend):
    async def upscale_image(self, job: TileJob) -> TileOutput:
        return dataclasses.replace(await super().upscale_image(job), fallback="cpu")


def test_the_fallback_is_named_in_a_header() -> None:
    image = {"image": ("a.png", encode(astronaut(16)), "image/png")}
    for backend, header in ((FellBack(loaded=["x4plus"]), "cpu"), (FakeBackend(["x4plus"]), None)):
        with TestClient(create_api(Settings(cpu_fallback=True), backend)) as client:
            response = client.post("/v1/upscale", files=image)
        assert response.status_code == 200, response.text
        assert response.headers.get("X-Pixserve-Fallback") == header
