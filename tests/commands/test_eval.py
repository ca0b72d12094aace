"""`runner eval` on a model folder with an evals file (the run's own evals are in tests/evals/test_stage.py)."""

import json

from runner.cli import main
from tests.chatty import chatty, own_cache  # noqa: F401  (fixtures)

EVALS = """evals:
  generation: {max_new_tokens: 6}
  sets:
    - name: names
      data: data/names.jsonl
      metrics: [exact_match, {regex: "(a+)+$"}, loglikelihood]
  require: [names.loglikelihood >= base, names.exact_match >= 0.5]
"""


def test_a_model_folder_beside_a_base_with_an_evals_file(chatty, tmp_path, capsys):  # noqa: F811
    (tmp_path / "evals.yaml").write_text(EVALS)
    out = tmp_path / "results"
    code = main(["eval", str(tmp_path / "model"), "--evals", str(tmp_path / "evals.yaml"), "--base",
                 str(tmp_path / "model"), "--out", str(out), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # a gate is missed
    scores = report["results"][0]["scores"]
    assert scores["loglikelihood"]["base"] == scores["loglikelihood"]["trained"] < 0  # the same weights
    assert [gate["passed"] for gate in report["gates"]] == [True, False] and report["passed"] is False
    rows = [json.loads(line) for line in (out / "names.trained.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]["scores"]) == {"exact_match", "regex", "loglikelihood"}
    assert json.loads((out / "results.json").read_text())["gates"] == report["gates"]

    code = main(["eval", str(tmp_path / "model"), "--evals", str(tmp_path / "evals.yaml"), "--out", str(out)])
    shown = capsys.readouterr().out
    assert code == 1 and "names.exact_match" in shown and "MISSED  names.exact_match >= 0.5" in shown
    assert "no base score of names.loglikelihood to compare with" in shown  # no --base: nothing to compare with


def test_an_invalid_evals_file_is_reported_at_its_lines(chatty, tmp_path, capsys):  # noqa: F811
    (tmp_path / "evals.yaml").write_text(EVALS.replace("exact_match, {regex", "exact_mach, {regex") + "extra: 1\n")
    assert main(["eval", str(tmp_path / "model"), "--evals", str(tmp_path / "evals.yaml")]) == 1
    err = capsys.readouterr().err
    assert "evals.yaml:6:17: error: evals.sets[0].metrics[0]: unknown metric 'exact_mach'" in err
    assert "evals.yaml:8:1: error: extra: unknown key 'extra'" in err
    assert "is not a valid evals file" in err


def test_a_model_without_evals_asks_for_an_evals_file(chatty, tmp_path, capsys):  # noqa: F811
    assert main(["eval", str(tmp_path / "model")]) == 2
    assert "give an evals file: runner eval TARGET --evals evals.yaml" in capsys.readouterr().err


def test_the_torch_free_eval_modules_import_neither_torch_nor_lm_eval():
    from tests.helpers import assert_imports_none_of

    assert_imports_none_of("import runner.commands.eval, runner.plan.evals, runner.spec.evalcheck, runner.evals.cache\n"
                           "import runner.evals.metrics, runner.evals.tasks, runner.evals.render, runner.evals.rows",
                           ("torch", "transformers", "lm_eval", "datasets"))
