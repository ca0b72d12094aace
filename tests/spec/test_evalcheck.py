"""Validate's checks of a spec's evals: every mistake with its file, line and column."""

import textwrap

from runner.spec.check import check_spec
from tests.chatty import TASK as CHATTY_TASK
from tests.conftest import BASE_SPEC, write_jsonl

TASK = CHATTY_TASK.replace("metric_list:", "process_docs: !function utils.process_docs\nmetric_list:")
"""The chatty task, with a `!function` tag as lm-eval's own tasks use them (read as text, never run)."""


def with_evals(project, tmp_path, evals: str, rows=None):
    write_jsonl(tmp_path / "data" / "test.jsonl", rows if rows is not None else
                [{"prompt": f"held-out question {i}", "reference": f"answer {i}"} for i in range(4)])
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(TASK)
    write_jsonl(tmp_path / "tasks" / "mc.jsonl", [{"question": "1 + 1?", "choices": ["2", "3"], "answer": 0}])
    return check_spec(project(BASE_SPEC + "evals:\n" + textwrap.indent(textwrap.dedent(evals).strip("\n"), "  ")
                              + "\n"))


def found(result, path):
    matches = [d for d in result.diagnostics if d.path == path]
    assert matches, [(d.path, d.summary) for d in result.diagnostics]
    return matches[0]


VALID = """
sets:
  - name: answers
    data: data/test.jsonl
    metrics: [exact_match, {contains: {ignore_case: true}}, {regex: "answer [0-9]"}, loglikelihood]
tasks:
  - task: tiny_mc
    include_path: tasks
require:
  - answers.exact_match >= 0.5
  - tiny_mc.acc_norm >= base - 0.02
"""


def test_valid_evals_have_no_diagnostics(project, tmp_path):
    result = with_evals(project, tmp_path, VALID)
    assert [d for d in result.diagnostics if "lm-eval is not installed" not in d.summary] == []
    assert result.spec.evals.names == ["answers", "tiny_mc"]


def test_a_missing_task_file_an_undeclared_task_and_its_missing_data(project, tmp_path):
    result = with_evals(project, tmp_path, """
        tasks:
          - task: tiny_mc
            include_path: task-files
          - task: tiny_mcq
            include_path: tasks
        """)
    missing = found(result, "evals.tasks[0].include_path")
    assert missing.summary == "task-files does not exist" and (missing.span.line, missing.span.column) == (10, 21)
    undeclared = found(result, "evals.tasks[1].task")
    assert undeclared.summary == "no task 'tiny_mcq' in tasks" and undeclared.hint == "did you mean 'tiny_mc'?"
    spec = with_evals(project, tmp_path, "tasks: [{task: tiny_mc, include_path: tasks}]").path
    (tmp_path / "tasks" / "mc.jsonl").unlink()
    assert "reads mc.jsonl (test), which is not in" in found(check_spec(spec), "evals.tasks[0].include_path").summary


def test_an_unknown_metric_is_named_with_a_suggestion(project, tmp_path):
    result = with_evals(project, tmp_path, """
        sets:
          - name: answers
            data: data/test.jsonl
            metrics: [exact_match, contain]
        """)
    error = found(result, "evals.sets[0].metrics[1]")
    assert error.summary.startswith("unknown metric 'contain'; did you mean 'contains'?")
    assert (error.span.line, error.span.column) == (11, 30) and result.spec is None


def test_a_test_set_without_references_is_refused_at_its_rows(project, tmp_path):
    rows = [{"prompt": "held-out question 1", "reference": "answer 1"}, {"prompt": "held-out question 2"},
            {"question": "x"}]
    result = with_evals(project, tmp_path, """
        sets:
          - name: answers
            data: data/test.jsonl
            metrics: [exact_match]
        """, rows)
    summary = found(result, "evals.sets[0].data")
    assert summary.summary == "2 of 3 rows in data/test.jsonl cannot be used (exact_match compares answers with a reference)"
    lines = {d.span.line: d.summary for d in result.errors if d.file.endswith("test.jsonl")}
    assert set(lines) == {2, 3} and 'no "reference"' in lines[2] and 'no "prompt"' in lines[3]
    # a metric that needs no reference takes such rows
    result = with_evals(project, tmp_path, """
        sets:
          - name: answers
            data: data/test.jsonl
            metrics: [valid_json, length]
        """, rows[:2])
    assert result.errors == []


def test_a_test_prompt_that_is_a_training_prompt_is_refused_and_a_near_one_warned(project, tmp_path):
    rows = [{"prompt": "question 3", "reference": "answer 3"}, {"prompt": "Question 4!", "reference": "answer 4"},
            {"prompt": "held-out", "reference": "x"}]
    result = with_evals(project, tmp_path, "sets: [{name: answers, data: data/test.jsonl, metrics: [exact_match]}]",
                        rows)
    error = [d for d in result.errors if d.path == "evals.sets[0].data" and d.file.endswith("job.yaml")][0]
    assert error.summary == "1 of 3 prompts of answers are training prompts too (the same text as a row of data.train)"
    (row,) = [d for d in result.errors if d.file.endswith("test.jsonl")]
    assert row.span.line == 1 and "also a training prompt: 'question 3'" in row.summary
    (warning,) = result.warnings
    assert "1 of 3 prompts of answers match training prompts once case" in warning.summary


def test_gates_name_evals_and_metrics_that_exist(project, tmp_path):
    result = with_evals(project, tmp_path, VALID.replace("answers.exact_match >= 0.5",
                                                         "answer.exact_match >= 0.5\n  - answers.length < 3\n"
                                                         "  - tiny_mc.accuracy >= 0.3"))
    assert found(result, "evals.require[0]").hint == "did you mean 'answers'?"
    assert found(result, "evals.require[1]").summary == "answers has no metric 'length'"
    assert found(result, "evals.require[2]").hint == "its metrics: acc, acc_norm"
    result = with_evals(project, tmp_path, VALID.replace(">= 0.5", "=> 1"))
    error = found(result, "evals.require[0]")
    assert "is not a condition" in error.summary and error.span.line == 16


def test_keep_best_and_every_are_checked(project, tmp_path):
    result = with_evals(project, tmp_path, VALID + "keep_best: answers.exact_match\n")
    assert found(result, "evals.keep_best").summary.startswith("keep_best chooses among the evaluations made while")
    result = with_evals(project, tmp_path, VALID + "every: 5\nkeep_best: answers.length\n")
    assert "not a metric of a set evaluated while training" in found(result, "evals.keep_best").summary


def test_a_schema_with_a_keyword_runner_does_not_check_is_an_error(project, tmp_path):
    result = with_evals(project, tmp_path, """
        sets:
          - name: answers
            data: data/test.jsonl
            metrics: [{json_schema: {inline: {type: object, patternProperties: {}}}}]
        """)
    error = found(result, "evals.sets[0].metrics[0].json_schema.inline")
    assert "does not check the keyword 'patternProperties'" in error.summary


def test_a_reward_model_takes_no_evals(project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 4)
    result = check_spec(project(BASE_SPEC.replace("method: sft", "method: reward") + "evals:\n  sets: [{name: a, "
                                "data: data/test.jsonl, metrics: [exact_match]}]\n"))
    assert "a reward model scores text" in found(result, "evals").summary
