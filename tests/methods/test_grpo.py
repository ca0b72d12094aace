"""GRPO with a declared reward on the tiny Llama: each option of the GRPO family reaches TRL's trainer, the
options that cannot act are refused, the plan shows the reward and the options, and a run trains."""

import json

import pytest

from runner.spec.check import check_spec
from tests.helpers import ADDITIONS, QUICK_GRPO, plan_of, run_spec, write_jsonl

# A random tiny model writes random tokens: some completions hold the letter 'a', some do not, so a group's
# rewards differ and the advantages are not all 0.
REWARD = ("  reward:\n    - contains: {text: a}\n      name: has_a\n    - numeric: {column: answer}\n      weight: 0.5\n"
          "  num_generations: 4\n  max_completion_length: 6\n")


@pytest.fixture
def prompts(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ADDITIONS)


def grpo(tiny_project, options: str):
    return run_spec(tiny_project, QUICK_GRPO + "trainable:\n  mode: lora\ngrpo:\n" + REWARD + options,
                    **{"method: sft": "method: grpo"})


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", [
    ("", dict(loss_type="dapo", scale_rewards="group", beta=0.0, num_iterations=1, epsilon=0.2, epsilon_high=None,
              importance_sampling_level="token", mask_truncated_completions=False)),
    ("  loss: grpo\n  importance_sampling: sequence\n  num_iterations: 2\n  epsilon: 0.1\n  epsilon_high: 0.3\n"
     "  scale_rewards: batch\n  beta: 0.02\n  mask_truncated_completions: true\n",
     dict(loss_type="grpo", scale_rewards="batch", beta=0.02, num_iterations=2, epsilon=0.1, epsilon_high=0.3,
          importance_sampling_level="sequence", mask_truncated_completions=True)),
    ("  loss: dr_grpo\n  scale_rewards: none\n", dict(loss_type="dr_grpo", scale_rewards="none")),
    ("  loss: bnpo\n  temperature: 0.7\n", dict(loss_type="bnpo", temperature=0.7)),
])
def test_each_grpo_option_reaches_the_trainer_s_arguments(tiny_project, prompts, built, options, expected):
    code, _, manifest = grpo(tiny_project, options)
    assert code == 0, manifest.error
    (trainer,) = built
    for name, value in expected.items():
        assert getattr(trainer.args, name) == value, name
    assert trainer.args.num_generations == 4 and trainer.args.max_completion_length == 6
    assert trainer.args.reward_weights == [1.0, 0.5] and trainer.reward_func_names == ["has_a", "numeric"]
    assert trainer.epsilon_high == (expected.get("epsilon_high") or trainer.args.epsilon)  # what the loss reads


@pytest.mark.parametrize("options, path, message", [
    ("  epsilon_high: 0.28\n", "grpo.epsilon_high", "epsilon_high has no effect with num_iterations 1"),
    ("  importance_sampling: sequence\n  loss: grpo\n", "grpo.importance_sampling",
     "importance_sampling has no effect with num_iterations 1"),
    ("  importance_sampling: sequence\n  num_iterations: 2\n", "grpo.importance_sampling",
     "sequence-level importance sampling (GSPO) with loss dapo"),
    ("  num_iterations: 2\n  epsilon: 0.3\n  epsilon_high: 0.2\n", "grpo.epsilon_high",
     "epsilon_high 0.2 is below epsilon 0.3"),
    ("  loss: ppo\n", "grpo.loss", "'ppo' is not one of: grpo, dr_grpo, dapo, bnpo"),
    ("  num_generations: 3\n", "grpo.num_generations", "num_generations 3 does not divide batch_size 8"),
])
def test_options_that_cannot_act_are_validate_errors(tiny_project, prompts, options, path, message):
    spec = tiny_project("version: 1\nname: tiny\nmethod: grpo\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
                        + QUICK_GRPO + "grpo:\n" + REWARD.replace("  num_generations: 4\n", "") + options)
    errors = {d.path: d.summary for d in check_spec(spec).errors}
    assert path in errors and message in errors[path], errors


def test_grpo_options_are_not_ppo_options(tiny_project, prompts):
    spec = tiny_project("version: 1\nname: tiny\nmethod: ppo\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
                        "ppo:\n  reward: {contains: {text: a}}\n  loss: dapo\n")
    assert [d.path for d in check_spec(spec).errors] == ["ppo.loss"]


def test_the_plan_shows_the_reward_as_a_formula_and_each_option_with_its_paper(tiny_project, prompts):
    plan = plan_of(tiny_project, QUICK_GRPO + "grpo:\n" + REWARD + "  loss: dr_grpo\n", **{"method: sft": "method: grpo"})
    assert plan.reward.formula == "has_a + 0.5 x numeric"
    assert [(t.name, t.weight) for t in plan.reward.terms] == [("has_a", 1.0), ("numeric", 0.5)]
    options = {option.name: option for option in plan.options}
    assert (options["loss"].value, options["loss"].default) == ("dr_grpo", "dapo")
    assert "Dr. GRPO" in options["loss"].origin and "arXiv:2503.20783" in options["loss"].origin
    assert "no effect with num_iterations 1" in options["epsilon"].origin
    assert {"num_generations", "scale_rewards", "beta", "num_iterations", "epsilon_high", "importance_sampling",
            "mask_truncated_completions"} <= set(options)
    from runner.plan.render import render

    text = render(plan)
    assert "Reward: has_a + 0.5 x numeric" in text and "loss                        dr_grpo" in text


@pytest.mark.slow
def test_grpo_trains_on_declared_checks_and_compares_them_before_and_after(tiny_project, tmp_path, prompts):
    write_jsonl(tmp_path / "data" / "eval.jsonl", ADDITIONS[:4])
    columns = "    - contains: {column: space}\n      name: has_space\n"  # reads the row: reaches TRL's functions
    code, run, manifest = run_spec(
        tiny_project, QUICK_GRPO + "trainable:\n  mode: lora\ngrpo:\n" + REWARD.replace("  num_generations", columns
                                                                                    + "  num_generations"),
        **{"method: sft": "method: grpo", "train: data/train.jsonl": "train: data/train.jsonl\n  eval: data/eval.jsonl"})
    assert code == 0, manifest.error
    assert manifest.parameters.adapters_changed > 0
    logged = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    steps = [r for r in logged if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("rewards/has_a/mean" in r for r in steps)
    assert any(r["rewards/has_space/mean"] > 0 for r in steps)  # the row's column reached the check
    assert "rewards/numeric/mean" in manifest.metrics.method  # each check's mean, in the manifest too
    comparison = manifest.reward
    assert comparison.prompts == 4 and set(comparison.base.checks) == {"has_a", "numeric", "has_space"}
    assert set(comparison.trained.checks) == {"has_a", "numeric", "has_space"}
    assert comparison.base.checks["has_space"] > 0 or comparison.trained.checks["has_space"] > 0
    base = comparison.base.checks
    assert comparison.base.total == pytest.approx(base["has_a"] + 0.5 * base["numeric"] + base["has_space"], abs=1e-3)
