"""The eval stage of real runs on the tiny Llama: base and result side by side, evals while training, gates
that fail a run with its weights kept, a run that resumes at its evals, and lm-eval tasks from the spec."""

import json

import pytest

from runner.cli import main
from runner.commands.run import summary
from runner.evals.stage import Stage
from runner.execute.job import run_plan
from runner.plan.models import EvalPlan
from runner.plan.planner import make_plan
from runner.rundir import RunDirectory
from runner.spec.evals import EvalsSpec
from tests.plan.test_planner import CPU

NAMES = """
every: 10
generation: {max_new_tokens: 12}
sets:
  - name: names
    data: data/names.jsonl
    metrics: [exact_match, loglikelihood]
"""


def run(path):
    plan = make_plan(path, run_root=path.parent, machine=CPU)
    code, run_dir = run_plan(plan, run_root=path.parent, spec_text=path.read_text(), console=False)
    return code, RunDirectory(run_dir), RunDirectory(run_dir).read_manifest()


def metric_lines(run_dir):
    return [json.loads(line) for line in run_dir.metrics.read_text().splitlines()]


@pytest.mark.slow
def test_the_trained_model_answers_the_held_out_name_set_that_the_base_cannot(chatty):
    path = chatty("{max_steps: 30, batch_size: 4, learning_rate: 1.0e-2}",
                  NAMES + "require: [names.exact_match >= 0.9, names.loglikelihood >= base + 1]\n")
    code, run_dir, manifest = run(path)
    assert code == 0 and manifest.state == "succeeded", manifest.error
    (result,) = manifest.evals.results
    assert result.scores["exact_match"].base == 0.0 and result.scores["exact_match"].trained >= 0.9
    assert result.scores["loglikelihood"].delta > 1 and manifest.evals.passed is True
    answers = [json.loads(line) for line in (run_dir.path / result.trained_rows).read_text().splitlines()]
    assert len(answers) == 6 and answers[0]["answer"] == "My name is Chatty." and answers[0]["line"] == 1
    base = [json.loads(line) for line in (run_dir.path / result.base_rows).read_text().splitlines()]
    assert [row["scores"]["exact_match"] for row in base] == [0.0] * 6
    evaluated = [line["step"] for line in metric_lines(run_dir) if "eval/names/exact_match" in line]
    assert evaluated == [0, 10, 20, 30]  # the base, while training, the result
    assert manifest.timings.eval_s > 0
    assert json.loads((run_dir.path / "evals" / "results.json").read_text())["passed"] is True
    shown = summary(run_dir)
    assert "names.exact_match        0.000      1.000    +1.000" in shown and "gates: 2 of 2 passed" in shown
    assert "| names | exact_match | 0 | 1 |" in (run_dir.model / "README.md").read_text()


@pytest.mark.slow
def test_a_missed_gate_fails_the_run_keeps_its_weights_and_a_changed_gate_only_evaluates_again(chatty, capsys):
    path = chatty("{max_steps: 2, batch_size: 4}", NAMES.replace("every: 10\n", "")
                  + "require: [names.exact_match >= 0.9]\n")
    code, run_dir, manifest = run(path)
    assert code == 1 and manifest.state == "failed" and manifest.error.kind == "gate"
    assert manifest.error.message == "the result missed 1 of 1 gate(s): names.exact_match >= 0.9 (scored 0)"
    assert "will not start" in manifest.error.hint and (run_dir.model / "model.safetensors").is_file()
    assert {artifact.path for artifact in manifest.artifacts} >= {"model/model.safetensors"}
    (gate,) = manifest.evals.gates
    assert (gate.passed, gate.value, gate.threshold) == (False, 0.0, 0.9)

    # runner eval: the same stage on the saved model, into a folder of its own; the run is left as it is
    assert main(["eval", str(run_dir.path), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["scores"]["exact_match"] == {"base": 0.0, "trained": 0.0, "delta": 0.0}
    assert report["out"].startswith(str(run_dir.path / "evals" / "runner-eval-"))
    assert run_dir.read_manifest().state == "failed"

    trained_lines = [line for line in metric_lines(run_dir) if "loss" in line]
    path.write_text(path.read_text().replace("names.exact_match >= 0.9", "names.exact_match >= 0"))
    code, again, manifest = run(path)
    assert code == 0 and again.path == run_dir.path and manifest.state == "succeeded"
    assert len(manifest.attempts) == 2 and manifest.evals.passed is True
    assert [line for line in metric_lines(run_dir) if "loss" in line] == trained_lines  # nothing trained again
    events = [json.loads(line)["event"] for line in run_dir.events.read_text().splitlines()]
    assert "evals_resumed" in events


@pytest.mark.slow
def test_an_lm_eval_task_runs_from_the_spec_on_the_base_and_the_result(chatty):
    path = chatty("{max_steps: 1, batch_size: 4}", """
        tasks:
          - task: tiny_mc
            include_path: tasks
            limit: 6
        require: [tiny_mc.acc >= base - 1]
        """)
    code, run_dir, manifest = run(path)
    assert code == 0, manifest.error
    (result,) = manifest.evals.results
    assert result.kind == "task" and result.rows == 6
    assert set(result.scores) == {"acc", "acc_norm"} and 0 <= result.scores["acc"].base <= 1
    rows = [json.loads(line) for line in (run_dir.path / result.trained_rows).read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {"doc_id", "target", "response", "scores"}
    replanned = make_plan(path, run_root=path.parent, machine=CPU)
    assert replanned.evals.base_cached == ["tiny_mc"]  # the same base and task: not evaluated twice


def test_keep_best_keeps_the_best_model_and_the_final_one_wins_a_tie(tmp_path):
    plan = EvalPlan(items=[], chat_template=False, every=2, during_evaluations=3, keep_best="s.exact_match")
    stage = Stage(EvalsSpec(), plan, tmp_path, tmp_path / "run" / "evals")
    saved = []

    def save():
        (tmp_path / "run" / "best").mkdir(parents=True, exist_ok=True)
        saved.append(True)
        return "best"

    stage.keep_best({"eval/s/exact_match": 0.5}, 2, save)
    stage.keep_best({"eval/s/exact_match": 0.5}, 4, save)
    stage.keep_best({"eval/s/exact_match": 0.25}, 6, save)
    assert len(saved) == 1 and (stage.best.step, stage.best.path) == (2, "best")
    stage.keep_best({"eval/s/exact_match": 0.4}, 8, lambda: "model", final=True)
    assert stage.best.step == 2 and (tmp_path / "run" / "best").is_dir()
    stage.keep_best({"eval/s/exact_match": 0.5}, 8, lambda: "model", final=True)
    assert (stage.best.step, stage.best.path) == (8, "model") and not (tmp_path / "run" / "best").exists()


def test_under_the_daemon_a_task_whose_data_links_out_of_the_folder_is_refused(tmp_path):
    """lm-eval reads a task's data itself: under a confinement (the watch daemon's) each file is checked first."""
    from runner import confine
    from runner.confine import Confinement
    from runner.errors import RunnerError
    from runner.evals.harness import evaluate
    from tests.chatty import TASK

    watched, outside = tmp_path / "watched", tmp_path / "outside"
    (watched / "tasks").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    (watched / "tasks" / "tiny_mc.yaml").write_text(TASK.replace("mc.jsonl", "../../outside/secret.jsonl"))
    with confine.applied(Confinement(str(watched.resolve()), None)), \
            pytest.raises(RunnerError, match="outside the watched folder"):
        evaluate(None, None, "tiny_mc", watched / "tasks", limit=1, num_fewshot=None, batch_size=1)
