"""Presets as data: the shipped ones parse and wire up; compiling a plan resolves every
step's options and refuses bad presets, parameters, models and outputs by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.config import Settings
from services.errors import InvalidParameter, NotConfigured, ServiceUnavailable, UnknownModel
from services.models.diffusion import GenerateOptions
from services.models.manifest import load_manifest
from services.pipelines.faces import FaceOptions
from services.pipelines.presets import (
    Preset,
    TileStep,
    load_presets,
    step_overrides,
)

SERVED = {"Upscaler", "Denoiser", "FaceRestorer"}
SHIPPED = {"enhance", "de-old-photo", "portrait", "make-anime", "stylize", "archive",
           "caption", "thumbnail-webp"}  # fmt: skip
MANIFEST = load_manifest()
SETTINGS = Settings()


def test_the_shipped_presets_and_what_they_need() -> None:
    library = load_presets(SERVED)
    assert set(library.presets) >= SHIPPED
    needs = {name: library.missing(preset) for name, preset in library.presets.items()}
    assert needs["make-anime"] == needs["stylize"] == ["Diffusion"]
    assert needs["caption"] == needs["archive"] == ["Vision"]
    assert needs["enhance"] == needs["portrait"] == needs["thumbnail-webp"] == []


def test_enhance_chains_its_steps() -> None:
    plan = load_presets(SERVED).compile("enhance", MANIFEST, SETTINGS)
    assert [(s.id, s.deployment, s.input) for s in plan.steps] == [
        ("denoise", "Denoiser", "source"),
        ("upscale", "Upscaler", "denoise"),
        ("face", "FaceRestorer", "upscale"),
    ]
    assert plan.result == "face" and plan.output is not None and plan.output.format == "png"
    denoise, upscale, face = (step.options for step in plan.steps)
    assert isinstance(denoise, TileStep) and denoise.options.model == "scunet-color"
    assert isinstance(upscale, TileStep) and (upscale.options.scale, upscale.native_scale) == (
        2.0, 4)  # fmt: skip
    assert isinstance(face, FaceOptions) and face.weight == 0.8
    assert plan.models == ["scunet-color", "x4plus", "gfpgan-v1.4", "retinaface-resnet50"]


def test_archive_captions_beside_the_image_chain() -> None:
    """A caption step takes the denoised image while the chain goes on from it; the
    plan's result is still the last image step."""
    plan = load_presets(SERVED | {"Vision"}).compile("archive", MANIFEST, SETTINGS)
    assert [(s.id, s.kind, s.input) for s in plan.steps] == [
        ("denoise", "denoise", "source"),
        ("upscale", "upscale", "denoise"),
        ("face", "face", "upscale"),
        ("describe", "caption", "denoise"),
    ]
    assert plan.result == "face" and plan.output is not None


def test_overrides_change_steps_and_output() -> None:
    plan = load_presets(SERVED).compile(
        "enhance", MANIFEST, SETTINGS,
        {"upscale": {"model": "x2plus", "scale": 3}, "face": {"max_faces": 2}},
        {"format": "avif", "quality": 60},
    )  # fmt: skip
    upscale, face = plan.steps[1].options, plan.steps[2].options
    assert isinstance(upscale, TileStep) and upscale.options.model == "x2plus"
    assert upscale.options.scale == 3.0 and upscale.native_scale == 2
    assert isinstance(face, FaceOptions) and face.max_faces == 2
    assert plan.output is not None and (plan.output.format, plan.output.quality) == ("avif", 60)


def test_a_preset_without_steps_only_encodes() -> None:
    plan = load_presets(SERVED).compile("thumbnail-webp", MANIFEST, SETTINGS)
    assert plan.steps == [] and plan.result == "source"
    assert plan.output is not None
    assert (plan.output.resize, plan.output.width, plan.output.max_bytes) == ("fit", 256, 40000)


@pytest.mark.parametrize(
    ("name", "overrides", "output", "error", "words"),
    [
        ("nope", None, None, UnknownModel, "unknown preset 'nope'; presets: archive, blur-faces"),
        ("make-anime", None, None, ServiceUnavailable, "needs the Diffusion deployment"),
        ("enhance", {"sharpen": {}}, None, InvalidParameter, "has no step ['sharpen']"),
        ("enhance", {"upscale": {"strength": 1}}, None, InvalidParameter,
         "step 'upscale' (upscale) has no parameter ['strength']"),
        ("enhance", {"upscale": {"model": "tiny"}}, None, UnknownModel, "unknown model 'tiny'"),
        ("enhance", {"denoise": {"model": "x4plus"}}, None, UnknownModel,
         "'x4plus' is a upscale model, not a denoise model"),
        ("enhance", {"upscale": {"scale": "big"}}, None, InvalidParameter, "step 'upscale'"),
        ("portrait", {"face": {"weight": 3}}, None, InvalidParameter, "weight must be within"),
        ("enhance", None, {"quality": 0}, InvalidParameter, "output: quality"),
        ("enhance", None, {"format": "gif"}, InvalidParameter, "output: format"),
    ],
)  # fmt: skip
def test_bad_requests_are_named(
    name: str, overrides: dict | None, output: dict | None, error: type, words: str
) -> None:
    with pytest.raises(error) as raised:
        load_presets(SERVED).compile(name, MANIFEST, SETTINGS, overrides, output)
    assert words in raised.value.message


def test_diffusion_presets_need_their_checkpoint_configured() -> None:
    library = load_presets(SERVED | {"Diffusion"})
    with pytest.raises(NotConfigured, match="no SDXL checkpoint is configured"):
        library.compile("make-anime", MANIFEST, SETTINGS)
    realism_only = SETTINGS.model_copy(update={"diffusion_checkpoints": {"realism": "sdxl-base"}})
    with pytest.raises(NotConfigured, match=r"unknown checkpoint 'anime'.*diffusion_checkpoints"):
        library.compile("make-anime", MANIFEST, realism_only)
    configured = SETTINGS.model_copy(update={"diffusion_checkpoints": {"anime": "animagine-xl"}})
    plan = library.compile("make-anime", MANIFEST, configured, {"anime": {"strength": 0.3}})
    anime = plan.steps[0].options
    assert isinstance(anime, GenerateOptions) and (anime.checkpoint, anime.strength) == (
        "anime", 0.3)  # fmt: skip
    with pytest.raises(InvalidParameter, match="steps 999 is over the cap"):
        library.compile("make-anime", MANIFEST, configured, {"anime": {"steps": 999}})


def test_text_presets_take_no_output() -> None:
    library = load_presets(SERVED | {"Vision"})
    assert library.compile("caption", MANIFEST, SETTINGS).output is None
    with pytest.raises(InvalidParameter, match="returns text"):
        library.compile("caption", MANIFEST, SETTINGS, None, {"format": "png"})


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([{"id": "a", "kind": "upscale"}, {"id": "a", "kind": "denoise"}], "used twice"),
        ([{"id": "a", "kind": "upscale", "input": "b"}, {"id": "b", "kind": "denoise"}],
         "not an earlier step"),
        ([{"id": "Bad Id", "kind": "upscale"}], "malformed"),
        ([{"id": "a", "kind": "sharpen"}], "kind"),
    ],
)  # fmt: skip
def test_malformed_presets_are_refused(steps: list[dict], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Preset.model_validate({"name": "x", "description": "", "steps": steps,
                               "output": {"format": "png"}})  # fmt: skip


def test_image_steps_need_an_output() -> None:
    with pytest.raises(ValidationError, match="needs an output"):
        Preset.model_validate({"name": "x", "description": "", "steps": [
            {"id": "a", "kind": "upscale"}]})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "words"),
    [("{", "not JSON"), ("[1]", "must be a JSON object"), ('{"a": 1}', "must map step ids")],
)
def test_step_overrides_must_be_objects(text: str, words: str) -> None:
    with pytest.raises(InvalidParameter, match=words):
        step_overrides(text)
    assert step_overrides('{"upscale": {"scale": 4}}') == {"upscale": {"scale": 4}}
