"""ORPO on the tiny Llama: planned with its objective and no reference model, and trained end to end."""

import json

from tests.helpers import FAST, plan_of, run_spec, write_jsonl

PAIRS = [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "I have no name."} for i in range(8)]


def test_the_plan_shows_the_objective_and_loads_no_reference(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", PAIRS)
    plan = plan_of(tiny_project, "orpo:\n  beta: 0.2\n", **{"method: sft": "method: orpo"})
    assert plan.objective.startswith("ORPO: cross-entropy of the chosen answer") and "no reference" in plan.objective
    assert plan.training_path == "TRL ORPOTrainer (trl.experimental.orpo)"
    assert plan.loss_mask.rule.startswith("chosen and rejected answers after the prompt (cross-entropy on chosen")
    assert [example.part for example in plan.loss_mask.examples[:2]] == ["chosen", "rejected"]
    names = {item.name for item in plan.memory.items}
    assert "reference model" not in names and plan.trainable.mode == "full"  # DPO would hold a copy here
    assert plan.settings.method["beta"].value == 0.2 and plan.settings.training.learning_rate.value == 8e-6


def test_orpo_with_lora_trains_the_adapter(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", PAIRS)
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n", **{"method: sft": "method: orpo"})
    assert code == 0, manifest.error
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed > 0
    assert "rewards/accuracies" in manifest.metrics.method and "rewards/margins" in manifest.metrics.method
    logged = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert all("nll_loss" in r and "log_odds_ratio" in r for r in logged if "loss" in r)
    assert manifest.metrics.steps == 4 and manifest.samples and manifest.samples[0].after is not None
