"""Every sync route over a fake platform backend (FastAPI's TestClient, no Ray, no
models): the route maps its form to a task spec, the use case runs on the backend, the
answer carries the output and its headers; bad input is a named 4xx JSON error."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.api.app import create_api
from services.config import Settings
from services.models.tile_io import TileJob, TileOutput
from tests.utils.fake_backend import FakeBackend
from tests.utils.images import astronaut, encode

SETTINGS = Settings(
    models=["x4plus", "x2plus"], default_model="x4plus", denoise_models=["scunet-color"],
    default_denoise_model="scunet-color", face_models=["gfpgan-v1.4"],
    face_detectors=["retinaface-resnet50"], diffusion_checkpoints={"realism": "sdxl-base"},
    caption_model="blip-caption", vqa_model="blip-vqa",
)  # fmt: skip
PNG = encode(astronaut(24))


@pytest.fixture
def backend() -> FakeBackend:
    configured = {name for task in ("upscale", "denoise", "face", "detect", "generate")
                  for name in SETTINGS.configured(task)}  # fmt: skip
    return FakeBackend(loaded=configured)


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_api(SETTINGS, backend)) as test_client:
        yield test_client


def size_of(content: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(content)).size


def test_upscale(client: TestClient, backend: FakeBackend) -> None:
    response = client.post("/v1/upscale", files={"image": ("a.png", PNG, "image/png")},
                           data={"model": "x2plus", "scale": "1.5", "format": "jpeg"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["X-Pixserve-Output-Size"] == "36x36"
    assert size_of(response.content) == (36, 36) and backend.calls == [("upscale_image", "x2plus")]


def test_denoise_keeps_the_size(client: TestClient) -> None:
    response = client.post("/v1/denoise", files={"image": ("a.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Model"] == "scunet-color"
    assert size_of(response.content) == (24, 24)


def test_restore_face_with_an_upscaled_background(client: TestClient) -> None:
    response = client.post("/v1/restore/face", files={"image": ("a.png", PNG, "image/png")},
                           data={"upscale": "2", "format": "webp"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Faces"] == "0"
    assert response.headers["content-type"] == "image/webp" and size_of(response.content) == (
        48,
        48,
    )


def test_detect_faces_answers_boxes_scores_and_landmarks(
    client: TestClient, backend: FakeBackend
) -> None:
    response = client.post("/v1/detect/faces", files={"image": ("a.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Faces"] == "1"
    found = response.json()
    assert found["detector"] == "retinaface-resnet50" and (found["width"], found["height"]) == (
        24, 24)  # fmt: skip
    (face,) = found["faces"]
    assert face["box"] == [6.0, 6.0, 18.0, 18.0] and face["score"] == 0.9
    assert len(face["landmarks"]) == 5 and all(len(point) == 2 for point in face["landmarks"])
    assert backend.calls == [("detect_faces", "retinaface-resnet50")]
    higher = client.post("/v1/detect/faces", files={"image": ("a.png", PNG, "image/png")},
                         data={"min_score": "0.95"})  # fmt: skip
    assert higher.status_code == 200 and higher.json()["faces"] == []
    unserved = client.post("/v1/detect/faces", files={"image": ("a.png", PNG, "image/png")},
                           data={"detector": "retinaface-mobilenet0.25"})  # fmt: skip
    assert unserved.status_code == 422 and "not served here" in unserved.json()["error"]["message"]


def test_blur_faces_changes_the_face_and_nothing_else(client: TestClient) -> None:
    image = astronaut(64)
    response = client.post("/v1/run/blur-faces",
                           files={"image": ("a.png", encode(image), "image/png")})  # fmt: skip
    assert response.status_code == 200, response.text
    blurred = np.asarray(Image.open(io.BytesIO(response.content)))
    assert blurred.shape == image.shape
    assert (blurred[:4] == image[:4]).all() and (blurred[:, :4] == image[:, :4]).all()
    face = (slice(24, 40), slice(24, 40))  # the stand-in's face is the middle half
    assert blurred[face].astype(float).std() < image[face].astype(float).std() / 2
    pixelated = client.post(
        "/v1/run/blur-faces",
        files={"image": ("a.png", encode(image), "image/png")},
        data={"params": '{"blur": {"method": "pixelate"}}'},
    )
    assert pixelated.status_code == 200, pixelated.text
    wrong = client.post(
        "/v1/run/blur-faces",
        files={"image": ("a.png", encode(image), "image/png")},
        data={"params": '{"blur": {"method": "smudge"}}'},
    )
    assert wrong.status_code == 422 and "blur or pixelate" in wrong.json()["error"]["message"]


def test_generate_returns_its_seed(client: TestClient) -> None:
    form = {"prompt": "a lighthouse", "width": "256", "height": "256", "seed": "5"}
    response = client.post("/v1/generate", data=form)
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Seed"] == "5"
    assert response.headers["X-Pixserve-Checkpoint"] == "realism"
    assert size_of(response.content) == (256, 256)


def test_caption(client: TestClient) -> None:
    response = client.post("/v1/caption", files={"image": ("a.png", PNG, "image/png")},
                           data={"outputs": ["caption", "nsfw"]})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"caption": "a small test image", "tags": None, "nsfw": 0.01}


def test_convert(client: TestClient) -> None:
    response = client.post("/v1/convert", files={"image": ("a.png", PNG, "image/png")},
                           data={"format": "png", "resize": "fit", "width": "12"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Output-Size"] == "12x12"


def test_a_preset_and_a_text_preset(client: TestClient) -> None:
    response = client.post("/v1/run/enhance", files={"image": ("a.png", PNG, "image/png")},
                           data={"params": '{"upscale": {"scale": 2}}'})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["X-Pixserve-Preset"] == "enhance"
    text = client.post("/v1/run/caption", files={"image": ("a.png", PNG, "image/png")})
    assert text.status_code == 200, text.text
    assert text.json()["preset"] == "caption" and text.json()["outputs"]


def test_vision_chat(client: TestClient) -> None:
    import base64

    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "a test answer"


def test_listings_and_probes(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["ready"] is True
    names = {model["name"] for model in client.get("/v1/models").json()["models"]}
    assert {"x4plus", "scunet-color"} <= names
    presets = {p["name"]: p for p in client.get("/v1/presets").json()["presets"]}
    assert presets["enhance"]["available"] is True and presets["enhance"]["reason"] is None


def test_a_preset_whose_models_are_not_loaded_says_so() -> None:
    """Availability comes from what the deployments have loaded, not what is declared:
    without the face model, the presets with a face step cannot run, and say why."""
    with TestClient(create_api(SETTINGS, FakeBackend(loaded=["x4plus", "scunet-color"]))) as c:
        presets = {p["name"]: p for p in c.get("/v1/presets").json()["presets"]}
    assert presets["portrait"]["available"] is False
    assert presets["portrait"]["missing_models"] == ["gfpgan-v1.4", "retinaface-resnet50"]
    assert "needs gfpgan-v1.4, retinaface-resnet50, not loaded" in presets["portrait"]["reason"]
    assert "unknown checkpoint 'anime'" in presets["make-anime"]["reason"]  # not configured
    assert presets["thumbnail-webp"]["available"] is True


@pytest.mark.parametrize(
    ("path", "form", "status", "words"),
    [
        ("/v1/upscale", {"scale": "nan"}, 422, "scale"),
        ("/v1/upscale", {"scale": "100"}, 422, "scale: 100 is out of range"),
        ("/v1/upscale", {"model": "x4plus-anime"}, 422, "not served here"),
        ("/v1/upscale", {"width": "16384", "height": "1", "format": "webp"}, 422, "WEBP"),
        ("/v1/denoise", {"model": "x4plus"}, 422, "not a denoise model"),
        ("/v1/restore/face", {"weight": "3"}, 422, "weight"),
        ("/v1/convert", {"scale": "inf"}, 422, "scale"),
        ("/v1/run/nope", {}, 422, "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_a_named_4xx(
    client: TestClient, backend: FakeBackend, path: str, form: dict[str, str], status: int,
    words: str,
) -> None:  # fmt: skip
    response = client.post(path, files={"image": ("a.png", PNG, "image/png")}, data=form)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] or words in json.dumps(response.json()), error
    assert backend.calls == []  # refused before any deployment was called


def test_undecodable_bytes_are_a_400(client: TestClient) -> None:
    response = client.post("/v1/upscale", files={"image": ("a.png", b"not an image", "image/png")})
    assert response.status_code in (400, 415) and response.json()["error"]["code"]


def test_a_request_over_its_compute_budget_is_refused_before_the_model(
    backend: FakeBackend,
) -> None:
    """A 24x24 input at x4 with x4plus costs 24*24*16/1e6 units; a tiny budget refuses it
    once the header is read, and a generation's cost is refused from its fields."""
    settings = SETTINGS.model_copy(update={"max_request_cost": 0.005})
    with TestClient(create_api(settings, backend)) as client:
        response = client.post("/v1/upscale", files={"image": ("a.png", PNG, "image/png")})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "over_budget" and "24x24" in error["message"]
        assert backend.calls == []
        small = client.post("/v1/upscale", files={"image": ("a.png", encode(astronaut(8)))})
        assert small.status_code == 200, small.text  # 8*8*16/1e6 = 0.001 units fit
        generation = client.post("/v1/generate", data={"prompt": "a cat", "steps": "4"})
        assert generation.status_code == 422 and "over_budget" in generation.text


class SlowBackend(FakeBackend):
    """A model deployment that takes longer than the deadline; notes its cancellation."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = False

    async def upscale_image(self, job: TileJob) -> TileOutput:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await super().upscale_image(job)


def test_a_request_past_its_deadline_is_cancelled_with_a_retryable_503() -> None:
    slow = SlowBackend()
    settings = SETTINGS.model_copy(update={"request_deadline_s": 0.2})
    with TestClient(create_api(settings, slow)) as client:
        response = client.post("/v1/upscale", files={"image": ("a.png", PNG, "image/png")})
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert slow.cancelled, "the deployment call was cancelled, not left running"


@pytest.mark.parametrize(
    ("path", "form", "param"),
    [
        ("/v1/upscale", {"scal": "2"}, "scal"),
        ("/v1/upscale", {"keep_metdata": "true"}, "keep_metdata"),
        ("/v1/denoise", {"strength": "2"}, "strength"),
        ("/v1/restore/face", {"fidelty": "0.3"}, "fidelty"),
    ],
)
def test_an_unknown_form_field_is_named(
    client: TestClient, backend: FakeBackend, path: str, form: dict[str, str], param: str
) -> None:
    """A misspelled field is refused before any work, never run as the default."""
    response = client.post(path, files={"image": ("a.png", PNG, "image/png")}, data=form)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and f"unknown field(s): {param}" in error["message"]
    assert response.headers["x-should-retry"] == "false" and backend.calls == []


def test_a_body_of_the_wrong_type_names_the_type_wanted(client: TestClient) -> None:
    as_json = client.post("/v1/upscale", json={"scale": 2})
    assert as_json.status_code == 415
    assert "takes multipart/form-data, not application/json" in as_json.json()["error"]["message"]
    as_form = client.post("/v1/chat/completions", data={"model": "blip-vqa"})
    assert as_form.status_code == 415 and "takes application/json" in as_form.text


@pytest.mark.parametrize("path", ["/v1/upscale", "/v1/denoise", "/v1/restore/face",
                                  "/v1/run/enhance"])  # fmt: skip
def test_keep_metadata_on_request_only(client: TestClient, path: str) -> None:
    """A camera JPEG (turned by EXIF, with a profile and XMP): stripped by default; kept
    on request, upright and with the output's size."""
    from tests.unit.imaging.test_metadata import ICC, XMP, camera_jpeg

    files = {"image": ("photo.jpg", camera_jpeg(), "image/jpeg")}
    plain = client.post(path, files=files)
    assert plain.status_code == 200, plain.text
    with Image.open(io.BytesIO(plain.content)) as image:
        assert not image.getexif() and "icc_profile" not in image.info
    kept = client.post(path, files=files, data={"keep_metadata": "true", "format": "webp"})
    assert kept.status_code == 200, kept.text
    with Image.open(io.BytesIO(kept.content)) as image:
        exif = image.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "Canon"
        assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == image.size
        assert image.info["icc_profile"] == ICC and XMP in image.info["xmp"]
