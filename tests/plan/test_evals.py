"""The eval plan: what each eval reads and asks of the model, its cost next to training, the base's cache,
hub tasks that are not here, and evals that do not change which run a plan is."""

import pytest

from runner.errors import RunnerError
from runner.plan.planner import make_plan
from runner.plan.render import render
from runner.rundir import plan_sha256
from tests.chatty import chatty, own_cache  # noqa: F401  (fixtures)
from tests.plan.test_planner import CPU

EVALS = """
every: 5
generation: {max_new_tokens: 12}
sets:
  - name: names
    data: data/names.jsonl
    metrics: [exact_match, loglikelihood]
tasks:
  - task: tiny_mc
    include_path: tasks
    limit: 5
require: [names.exact_match >= 0.9]
"""


def plan(path):
    return make_plan(path, run_root=path.parent, machine=CPU)


def test_the_plan_shows_each_eval_and_what_it_costs_next_to_training(chatty):  # noqa: F811
    made = plan(chatty("{max_steps: 20, batch_size: 4}", EVALS))
    names, task = made.evals.items
    assert (names.kind, names.rows, names.max_new_tokens, names.new_tokens) == ("set", 6, 12, 72)
    assert names.prompt_tokens > 6 * 5 and names.during and names.data.sha256
    assert (task.kind, task.rows, task.output_type, task.metrics) == ("task", 5, "multiple_choice", ["acc", "acc_norm"])
    assert made.evals.during_evaluations == 3 and made.evals.every == 5 and made.evals.base_cached == []
    work = made.evals.token_work
    assert work["during"] == 3 * (names.prompt_tokens + 72 * 8) and work["base"] == work["result"]
    assert made.evals.share_of_training == pytest.approx(
        (work["base"] + work["during"] + work["result"]) / work["training"], abs=1e-3)
    shown = render(made)
    assert "Evals: 1 test set, 1 lm-eval task, on the base and the result" in shown
    assert "while training: names every 5 steps (3 times)" in shown and "require: names.exact_match >= 0.9" in shown
    assert "cost: about" in shown


def test_a_hub_task_outside_the_datasets_cache_is_refused_with_the_command_that_fetches_it(
        chatty, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty"))
    (tmp_path / "tasks" / "hub_mc.yaml").write_text(
        (tmp_path / "tasks" / "tiny_mc.yaml").read_text().replace("task: tiny_mc", "task: hub_mc")
        .replace("dataset_path: json", "dataset_path: test-org/tinyqa\ndataset_name: easy"))
    with pytest.raises(RunnerError) as raised:
        plan(chatty("{max_steps: 2}", "tasks: [{task: hub_mc, include_path: tasks}]"))
    assert "reads the hub dataset test-org/tinyqa, which is not in the datasets cache" in raised.value.message
    assert "datasets.load_dataset(\"test-org/tinyqa\", \"easy\")" in raised.value.hint


def test_evals_and_gates_do_not_change_which_run_a_plan_is_but_evals_while_training_do(chatty):  # noqa: F811
    first = plan(chatty("{max_steps: 2}", EVALS))
    relaxed = plan(chatty("{max_steps: 2}", EVALS.replace(">= 0.9", ">= 0.5").replace("limit: 5", "limit: 3")))
    assert plan_sha256(first) == plan_sha256(relaxed)
    assert plan_sha256(first) != plan_sha256(plan(chatty("{max_steps: 2}", EVALS.replace("every: 5", "every: 1"))))
