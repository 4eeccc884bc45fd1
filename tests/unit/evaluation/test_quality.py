"""Degradation, scores, references and the report: what ``pixserve eval`` measures with,
checked on scikit-image's bundled photos without a model."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from services.evaluation.quality import Degradation, crop_to, degrade, score
from services.evaluation.references import BUNDLED, as_rgb, bundled_references, fit
from services.evaluation.report import markdown, plot
from services.evaluation.run import Candidate, bicubic, evaluate
from tests.utils.images import astronaut

pytestmark = pytest.mark.timeout(120)


def test_the_bundled_references_are_rgb_and_fit() -> None:
    references = bundled_references(96)
    assert [r.name for r in references] == list(BUNDLED)
    for reference in references:
        assert reference.pixels.dtype == np.uint8 and reference.pixels.shape[2] == 3
        assert max(reference.pixels.shape[:2]) == 96


def test_rgb_from_every_layout() -> None:
    gray = np.full((4, 5), 7, np.uint8)
    assert as_rgb(gray).shape == (4, 5, 3) and int(as_rgb(gray)[0, 0, 2]) == 7
    assert as_rgb(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert int(as_rgb(np.full((2, 2), 65535, np.uint16)).max()) == 255
    assert fit(gray, 100) is gray  # never enlarged


def test_degrading_downscales_then_adds_noise_then_jpeg() -> None:
    truth = crop_to(astronaut(130), 4)
    assert truth.shape == (128, 128, 3)
    plain = degrade(truth, 4, Degradation())
    assert plain.shape == (32, 32, 3)
    noisy = degrade(truth, 4, Degradation(noise_sigma=10))
    spread = float(np.std(noisy.astype(float) - plain.astype(float)))
    assert 8 < spread < 12  # sigma 10, clipped a little at the ends
    assert np.array_equal(noisy, degrade(truth, 4, Degradation(noise_sigma=10)))  # seeded
    jpeg = degrade(truth, 1, Degradation(jpeg_quality=10))
    assert jpeg.shape == truth.shape and not np.array_equal(jpeg, truth)


def test_scores_rank_a_closer_image_higher() -> None:
    truth = astronaut(64)
    assert score(truth, truth, 4) == (100.0, 1.0)
    rng = np.random.default_rng(0)
    slight = np.clip(truth + rng.normal(0, 2, truth.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(truth + rng.normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    slight_psnr, slight_ssim = score(truth, slight, 4)
    heavy_psnr, heavy_ssim = score(truth, heavy, 4)
    assert 40 < slight_psnr < 45 and heavy_psnr < 23  # 20 log10(255 / sigma)
    assert heavy_ssim < slight_ssim < 1
    with pytest.raises(ValueError, match="not the reference"):
        score(truth, truth[:32], 0)


def test_a_report_ranks_models_against_the_bicubic_floor() -> None:
    """A model that blurs (nearest-neighbour up) scores under bicubic; one that returns
    the truth (an oracle) scores over it: the report's order and its files."""
    references = bundled_references(64, ("astronaut", "camera"))
    truths = {r.name: crop_to(r.pixels, 4) for r in references}

    async def restore(model: str, pixels: np.ndarray) -> np.ndarray:
        if model == "oracle":
            return next(t for t in truths.values() if t.shape[0] == 4 * pixels.shape[0]
                        and np.array_equal(degrade(t, 4, Degradation()), pixels))  # fmt: skip
        return np.repeat(np.repeat(pixels, 4, axis=0), 4, axis=1)

    report = asyncio.run(evaluate(
        [Candidate("nearest", "upscale", 4), Candidate("oracle", "upscale", 4)], references,
        Degradation(), restore, source="scikit-image", max_side=64, gpu_hour_price_usd=3.6,
    ))  # fmt: skip
    assert [row.model for row in report.models] == ["oracle", "bicubic", "nearest"]
    oracle, floor, nearest = report.models
    assert oracle.psnr == 100.0 and nearest.psnr < floor.psnr and nearest.ssim < floor.ssim
    assert floor.kind == "baseline" and floor.cost_per_image_usd == 0
    assert nearest.cost_per_image_usd == pytest.approx(nearest.seconds_per_image / 1000)
    assert [image.image for image in nearest.images] == ["astronaut", "camera"]
    assert nearest.images[0].input_size == (16, 16)
    text = markdown(report)
    assert "| nearest | x4 |" in text and "![PSNR and SSIM" in text and "## Per image" in text
    picture = Image.open(io.BytesIO(plot(report)))
    assert picture.format == "PNG" and picture.size == (1000, 400)
    assert np.asarray(picture.convert("L")).std() > 10  # drawn, not blank


def test_the_bicubic_baseline_restores_at_its_scale() -> None:
    low = np.zeros((8, 10, 3), np.uint8)
    assert asyncio.run(bicubic(3)("bicubic", low)).shape == (24, 30, 3)
