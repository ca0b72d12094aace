"""PPO and GRPO jobs end to end on a tiny Llama, and specs that build on other specs."""

import json

import pytest

from runner.errors import RunnerError
from runner.plan.planner import make_plan
from tests.helpers import CPU, QUICK_RL, TINY_SPEC, run_spec, write_jsonl

def test_ppo_with_a_reward_function(tiny_project, tmp_path, prompts):
    code, run, manifest = run_spec(
        tiny_project, QUICK_RL + "ppo:\n  reward: {function: 'scoring:score'}\n  response_length: 6\n",
        **{"method: sft": "method: ppo", "data/train.jsonl": "data/prompts.jsonl"})
    assert code == 0, manifest.error
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("objective/kl", "objective/scores", "objective/entropy", "policy/clipfrac_avg", "val/clipfrac_avg",
                "val/eos_rate", "val/response_length", "time/generation_s", "time/training_s", "loss/policy_avg"):
        assert key in records[0], key
    assert records[0]["objective/kl"] == 0.0
    assert manifest.plan.settings.method["value_model"].value == "separate"
    assert manifest.plan.loss_mask.generation_tokens == 6
    assert set(manifest.parameters.changed) == set(manifest.plan.trainable.trained)


def test_ppo_scores_declared_checks_with_the_same_module(tiny_project, tmp_path, prompts):
    write_jsonl(tmp_path / "data" / "prompts.jsonl", [{"prompt": f"What is {i} + 1?", "answer": i + 1} for i in range(8)])
    code, run, manifest = run_spec(
        tiny_project, QUICK_RL + "ppo:\n  response_length: 6\n  reward:\n    - contains: {text: a}\n"
                              "    - numeric: {column: answer}\n      weight: 2\n"
                              "    - length: {unit: tokens, max: 3, penalty: 0.5}\n",
        **{"method: sft": "method: ppo", "data/train.jsonl": "data/prompts.jsonl"})
    assert code == 0, manifest.error
    for record in [json.loads(line) for line in run.metrics.read_text().splitlines()]:
        means = [record[f"rewards/{name}/mean"] for name in ("contains", "numeric", "length")]
        assert record["objective/scores"] == pytest.approx(means[0] + 2 * means[1] + means[2], abs=1e-5)
        assert means[2] <= 0  # a penalty
    assert manifest.plan.reward.formula == "contains + 2 x numeric + length"


def test_grpo_with_a_reward_function(tiny_project, tmp_path, prompts):
    code, _, manifest = run_spec(
        tiny_project, QUICK_RL + "trainable:\n  mode: lora\ngrpo:\n  reward: {function: 'scoring:score'}\n"
                              "  num_generations: 4\n  max_completion_length: 6\n",
        **{"method: sft": "method: grpo", "data/train.jsonl": "data/prompts.jsonl"})
    assert code == 0, manifest.error
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed > 0


def test_sft_reward_ppo_chain_through_job_references(tiny_project, tmp_path, prompts):
    write_jsonl(tmp_path / "data" / "pairs.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "No name."} for i in range(8)])
    sft = TINY_SPEC.replace("name: tiny", "name: stage-sft") + QUICK_RL
    tiny_project(sft, name="sft.yaml")
    reward = (TINY_SPEC.replace("name: tiny", "name: stage-rm").replace("method: sft", "method: reward")
              .replace("data/train.jsonl", "data/pairs.jsonl") + QUICK_RL)
    tiny_project(reward, name="rm.yaml")
    ppo = (TINY_SPEC.replace("name: tiny", "name: stage-ppo").replace("method: sft", "method: ppo")
           .replace("./model", "{job: stage-sft}").replace("data/train.jsonl", "data/prompts.jsonl")
           + QUICK_RL + "trainable:\n  mode: lora\nppo:\n  reward: {model: {job: stage-rm}}\n  response_length: 6\n")
    ppo_path = tiny_project(ppo, name="ppo.yaml")
    with pytest.raises(RunnerError, match="'stage-sft' has no succeeded run"):
        make_plan(ppo_path, run_root=tmp_path, machine=CPU)

    for name in ("sft.yaml", "rm.yaml"):
        from runner.execute.job import run_plan

        plan = make_plan(tmp_path / name, run_root=tmp_path, machine=CPU)
        assert run_plan(plan, run_root=tmp_path, console=False)[0] == 0

    plan = make_plan(ppo_path, run_root=tmp_path, machine=CPU)
    base, reward_model = plan.inputs.base_model, plan.inputs.reward_model
    assert base.kind == "job" and "stage-sft" in base.job_run and len(base.job_manifest_sha256) == 64
    assert reward_model.kind == "job" and "stage-rm" in reward_model.job_run
    assert plan.settings.method["value_model"].value == "shared"
    from runner.execute.job import run_plan

    code, run_dir = run_plan(plan, run_root=tmp_path, console=False)
    assert code == 0
