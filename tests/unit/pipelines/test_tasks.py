"""Task specs: parsed once, refused up front with the field named, stored and read back."""

from __future__ import annotations

from typing import Any

import pytest

from services.config import Settings
from services.errors import ImageTooLarge, InvalidParameter, PixserveError, UnknownModel
from services.models.manifest import load_manifest
from services.pipelines.presets import load_presets
from services.pipelines.tasks import (
    CaptionTask,
    GenerateTask,
    PresetTask,
    TaskContext,
    UpscaleTask,
    form_fields,
    parse_task,
    plan_task,
    with_seeds,
)
from services.pipelines.upscale import UpscaleOptions

MANIFEST = load_manifest()
SETTINGS = Settings(models=["x4plus", "x2plus"], default_model="x4plus",
                    diffusion_checkpoints={"realism": "sdxl-base"})  # fmt: skip
CONTEXT = TaskContext(MANIFEST, SETTINGS, load_presets({"Upscaler", "Denoiser"}))


def plan(fields: dict[str, Any]) -> Any:
    return plan_task(parse_task(fields), CONTEXT)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"scale": "100"}, InvalidParameter, "scale: 100 is out of range"),
        ({"scale": "0.1"}, InvalidParameter, "scale: 0.1 is out of range"),
        ({"scale": "nan"}, InvalidParameter, "scale: Input should be a finite number"),
        ({"scale": "1e308"}, InvalidParameter, "scale: 1e+308 is out of range"),
        ({"scale": "inf"}, InvalidParameter, "scale: Input should be a finite number"),
        ({"scale": "2", "width": "64"}, InvalidParameter, "either scale or width/height"),
        ({"model": "x4plus-anime"}, UnknownModel, "'x4plus-anime' is not served here"),
        ({"model": "scunet-color"}, UnknownModel, "is a denoise model, not a upscale model"),
        ({"model": "nope"}, UnknownModel, "unknown model 'nope'"),
        ({"width": "16384", "height": "1", "format": "webp"}, InvalidParameter,
         "width: 16384 px is over WEBP's limit"),
        ({"width": "20000", "height": "20000"}, ImageTooLarge, "over the limit"),
        ({"scal": "2"}, InvalidParameter, "scal: Extra inputs are not permitted"),
        ({"quality": "0"}, InvalidParameter, "quality: Input should be greater than or equal"),
        ({"format": "gif"}, InvalidParameter, "format: Input should be"),
    ],
)  # fmt: skip
def test_an_upscale_that_cannot_run_is_refused_naming_the_field(
    fields: dict[str, str], error: type[PixserveError], words: str
) -> None:
    with pytest.raises(error, match=words.replace("+", r"\+").replace("(", r"\(")):
        plan({"task": "upscale", **fields})


def test_a_good_upscale_resolves_its_model_and_native_scale() -> None:
    planned = plan({"task": "upscale", "model": "x2plus", "scale": "1.5", "format": "jpeg"})
    assert planned.options == UpscaleOptions("x2plus", 1.5, None, None, "jpeg", 90)
    assert planned.native_scale == 2 and planned.output_format == "jpeg"


def test_other_tasks_are_refused_up_front() -> None:
    with pytest.raises(InvalidParameter, match="weight: Input should be less than or equal to 1"):
        plan({"task": "restore_face", "weight": "2"})
    with pytest.raises(InvalidParameter, match="steps"):
        plan({"task": "generate", "prompt": "a cat", "steps": "100000"})
    with pytest.raises(InvalidParameter, match="prompt is empty"):
        plan({"task": "generate", "prompts": ["a cat", " "]})
    with pytest.raises(InvalidParameter, match=r"outputs\.0: Input should be"):
        plan({"task": "caption", "outputs": ["poem"]})
    with pytest.raises(InvalidParameter, match="task: Input tag 'sharpen' found"):
        plan({"task": "sharpen"})
    with pytest.raises(InvalidParameter, match="width: 20000 px is over WEBP's limit"):
        plan({"task": "convert", "format": "webp", "resize": "fit", "width": "20000"})


def test_form_fields_take_lists_json_and_refuse_repeats() -> None:
    raw = form_fields("preset", {"preset": ["enhance"], "params": ['{"upscale": {"scale": 2}}']})
    assert parse_task(raw) == PresetTask(preset="enhance", params={"upscale": {"scale": 2}})
    assert form_fields("caption", {"outputs": ["caption", "nsfw"]})["outputs"] == [
        "caption",
        "nsfw",
    ]
    with pytest.raises(InvalidParameter, match="scale: given 2 times"):
        form_fields("upscale", {"scale": ["2", "3"]})
    with pytest.raises(InvalidParameter, match="params: must be a JSON object"):
        form_fields("preset", {"preset": ["enhance"], "params": ["[1]"]})


def test_a_stored_spec_reads_back_the_same_and_old_records_still_read() -> None:
    spec = UpscaleTask(model="x2plus", scale=1.5, format="webp")
    assert parse_task(spec.model_dump(mode="json")) == spec
    old = {"name": "upscale", "model": "x2plus", "scale": None, "width": None, "height": None,
           "format": "png", "quality": 90}  # fmt: skip
    assert parse_task(old) == UpscaleTask(model="x2plus")
    old_preset = {"name": "preset", "preset": "enhance", "params": {}, "output": {"format": "jpeg"}}
    assert parse_task(old_preset) == PresetTask(preset="enhance", format="jpeg")
    assert parse_task({"task": "caption"}) == CaptionTask()


def test_generate_jobs_record_a_seed_per_item() -> None:
    counted = with_seeds(GenerateTask(prompt="a cat", count=3, seed=7))
    assert counted.seeds == [7, 8, 9]
    items = [counted.for_item(i) for i in range(3)]
    assert [(item.prompt, item.seed) for item in items] == [
        ("a cat", 7),
        ("a cat", 8),
        ("a cat", 9),
    ]
    listed = with_seeds(GenerateTask(prompts=["a", "b"]))
    assert listed.seeds is not None and len(set(listed.seeds)) == 2
    assert listed.for_item(1).prompt == "b" and listed.for_item(1).seed == listed.seeds[1]
    with pytest.raises(InvalidParameter, match="either prompt"):
        plan({"task": "generate", "prompt": "a", "prompts": ["b"]})


def test_noise_level_is_for_ffdnet_only() -> None:
    settings = Settings(denoise_models=["scunet-color", "ffdnet-color"],
                        default_denoise_model="scunet-color")  # fmt: skip
    context = TaskContext(MANIFEST, settings, load_presets({"Denoiser"}))
    ffdnet = plan_task(parse_task({"task": "denoise", "model": "ffdnet-color"}), context)
    assert ffdnet.options.noise_level == 25.0  # the default level
    given = {"task": "denoise", "model": "ffdnet-color", "noise_level": "40"}
    assert plan_task(parse_task(given), context).options.noise_level == 40.0
    with pytest.raises(InvalidParameter, match="noise_level: scunet-color estimates") as error:
        plan_task(parse_task({"task": "denoise", "noise_level": "10"}), context)
    assert error.value.param == "noise_level"
    with pytest.raises(InvalidParameter, match="noise_level: Input should be less than"):
        parse_task({"task": "denoise", "model": "ffdnet-color", "noise_level": "90"})
    assert plan_task(parse_task({"task": "denoise"}), context).options.noise_level is None
