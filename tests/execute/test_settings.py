"""Typed settings from the plan, read at start-up: a broken plan fails before a run directory exists."""

import pytest

from runner.errors import RunnerError
from runner.execute.job import run_plan
from runner.execute.settings import RunSettings
from runner.methods import registry
from runner.methods.descriptors.ppo import PpoSection
from runner.rewards.spec import DeclaredReward
from tests.helpers import plan_of, write_jsonl


@pytest.fixture
def dpo_plan(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "No name."} for i in range(4)])
    return plan_of(tiny_project, "trainable:\n  mode: lora\n", **{"method: sft": "method: dpo"})


def test_a_plan_missing_a_setting_fails_before_the_run_starts(dpo_plan, tmp_path):
    settings = dpo_plan.settings
    method = {name: entry for name, entry in settings.method.items() if name != "beta"}
    broken = dpo_plan.model_copy(update={"settings": settings.model_copy(update={"method": method})})
    with pytest.raises(RunnerError, match="the plan has no setting dpo.beta"):
        run_plan(broken, run_root=tmp_path, console=False)
    assert not (tmp_path / "runs").exists()


def test_an_unregistered_method_fails_before_the_run_starts(dpo_plan, tmp_path):
    with pytest.raises(RunnerError, match="method 'rlhf-magic' is not registered"):
        run_plan(dpo_plan.model_copy(update={"method": "rlhf-magic"}), run_root=tmp_path, console=False)
    assert not (tmp_path / "runs").exists()


def test_the_method_section_comes_back_typed_with_its_autos_resolved(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": f"Name {i}?"} for i in range(8)])
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    plan = plan_of(tiny_project, "trainable:\n  mode: lora\nppo:\n  reward: {function: 'scoring:score'}\n",
                   **{"method: sft": "method: ppo"})
    settings = RunSettings.of(plan, registry.get("ppo"))
    assert isinstance(settings.method, PpoSection) and isinstance(settings.method.reward, DeclaredReward)
    assert settings.method.value_model == "shared"  # `auto` in the spec, resolved by the descriptor
    assert settings.training.batch_size == plan.steps.batch_size
    assert settings.training.micro_batch_size == plan.settings.training.micro_batch_size.value
