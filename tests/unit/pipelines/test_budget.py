"""A generation's compute budget: text-to-image is priced (and refused) at planning from
its size and steps; image-to-image once its input is decoded, for the steps its
strength leaves."""

from __future__ import annotations

import pytest

from services.config import Settings
from services.models.manifest import load_manifest
from services.pipelines.budget import ARCHITECTURE_COST, OverBudget
from services.pipelines.presets import PresetLibrary
from services.pipelines.tasks import GenerateTask, TaskContext, plan_task

SETTINGS = Settings(diffusion_checkpoints={"realism": "sdxl-base"}, max_request_cost=2.0)
CONTEXT = TaskContext(load_manifest(), SETTINGS, PresetLibrary({}, set()))


def test_text_to_image_is_priced_and_refused_at_planning() -> None:
    with pytest.raises(OverBudget, match=r"cost 7\.9 compute units"):
        plan_task(GenerateTask(prompt="a cat", width=512, height=512, steps=30), CONTEXT)


def test_image_to_image_is_priced_on_the_input_for_the_steps_run() -> None:
    spec = GenerateTask(prompt="a cat", steps=30, strength=0.5)  # 1024 px by default
    budget = plan_task(spec, CONTEXT, image_to_image=True).budget  # not refused by width
    assert budget.per_megapixel == ARCHITECTURE_COST["SDXL"] * 15
    assert budget.check(96, 96) < 2.0
    with pytest.raises(OverBudget, match="for a 512x512 input"):
        budget.check(512, 512)
