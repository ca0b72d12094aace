"""RLOO on the tiny Llama with a declared reward: its options reach TRL's trainer, and it trains."""

import json

import pytest

from runner.spec.check import check_spec
from tests.helpers import ADDITIONS, QUICK_GRPO, run_spec, write_jsonl

REWARD = "  reward:\n    - contains: {text: a}\n    - length: {unit: tokens, max: 4, penalty: 0.1}\n"


@pytest.fixture
def prompts(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ADDITIONS)


def rloo(tiny_project, options: str, mode: str = "lora"):
    return run_spec(tiny_project, QUICK_GRPO + f"trainable:\n  mode: {mode}\nrloo:\n" + REWARD
                    + "  num_generations: 4\n  max_completion_length: 6\n" + options, **{"method: sft": "method: rloo"})


@pytest.mark.slow
def test_rloo_options_reach_the_trainer_s_arguments(tiny_project, prompts, built):
    code, _, manifest = rloo(tiny_project, "  beta: 0.1\n  normalize_advantages: true\n  num_iterations: 2\n"
                                           "  epsilon: 0.1\n  epsilon_high: 0.25\n  mask_truncated_completions: true\n",
                             mode="full")
    assert code == 0, manifest.error
    (trainer,) = built
    args = trainer.args
    assert (args.beta, args.normalize_advantages, args.num_iterations, args.epsilon, args.epsilon_high) == (
        0.1, True, 2, 0.1, 0.25)
    assert args.mask_truncated_completions and args.num_generations == 4 and args.reward_weights == [1.0, 1.0]
    assert trainer.reward_func_names == ["contains", "length"]
    # full training with beta > 0: TRL's reference is runner's frozen copy of the model as loaded, not a reload
    assert trainer.ref_model is not None and not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert "reference model" in {item.name for item in manifest.plan.memory.items}


def test_clipping_without_a_second_pass_is_refused(tiny_project, prompts):
    spec = tiny_project("version: 1\nname: tiny\nmethod: rloo\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
                        "rloo:\n" + REWARD + "  epsilon_high: 0.3\n")
    assert [(d.path, d.summary.split(":")[0]) for d in check_spec(spec).errors] == [
        ("rloo.epsilon_high", "epsilon_high has no effect with num_iterations 1")]


@pytest.mark.slow
def test_rloo_trains_a_tiny_model(tiny_project, prompts):
    code, run, manifest = rloo(tiny_project, "")
    assert code == 0, manifest.error
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed > 0
    logged = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert all("rewards/contains/mean" in r and "rewards/length/mean" in r for r in logged if "reward" in r)
    assert manifest.plan.training_path == "TRL RLOOTrainer" and manifest.plan.objective.startswith("RLOO:")
