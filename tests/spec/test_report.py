"""The validation report as one typed record (runner.spec.report): what `runner validate --format json` prints,
the checking worker sends and admission reads back, field for field and key for key."""

import json

from runner.cli import main
from runner.daemon.admission import Allowances, verdict
from runner.spec.check import check_spec
from runner.spec.report import ValidationReport
from tests.conftest import BASE_SPEC

GRPO = BASE_SPEC.replace("method: sft", "method: grpo").replace("name: tiny", "name: scored") + (
    "grpo: {reward: {function: 'rewards:score'}}\n")


def test_the_printed_report_keeps_validate_s_keys_in_their_order(project, tmp_path, capsys):
    (tmp_path / "rewards.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    valid, invalid = project(GRPO, name="grpo.yaml"), project(BASE_SPEC + "training: {lerning_rate: 1}\n")
    assert main(["validate", "--format", "json", str(valid), str(invalid), str(tmp_path / "data" / "train.jsonl")]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["format_version", "valid", "error_count", "warning_count", "diagnostics", "files",
                             "data_files"]
    assert [list(record) for record in printed["files"]] == [
        ["file", "valid", "name", "method", "depends_on", "runs_code", "priority", "data"], ["file", "valid", "data"]]
    (diagnostic,) = printed["diagnostics"]
    assert list(diagnostic) == ["severity", "summary", "detail", "range", "path", "hint"]
    assert list(diagnostic["range"]) == ["filename", "start", "end"] and list(diagnostic["range"]["start"]) == [
        "line", "column"]
    assert printed["files"][0]["runs_code"] == [{"kind": "reward_function", "path": "grpo.reward.function",
                                                 "what": "rewards:score", "line": 7}]
    assert list(printed["files"][0]["data"]["train"]) == ["rows", "usable_rows", "format", "variant", "checked",
                                                          "sources"]
    assert printed["data_files"] == [{"file": str(tmp_path / "data" / "train.jsonl"),
                                      "specs": [str(valid), str(invalid)]}]


def test_the_worker_s_report_reads_back_as_the_same_record_and_admits(project, tmp_path):
    (tmp_path / "rewards.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    made = ValidationReport.of([check_spec(project(GRPO, name="grpo.yaml"))])
    sent = json.loads(json.dumps(made.to_json()))  # as the worker's reply carries it
    assert ValidationReport.model_validate(sent) == made
    assert not verdict(sent, "", Allowances()).valid  # runs code: refused unless allowed
    admitted = verdict(sent, "", Allowances(reward_functions=True))
    assert admitted.valid and (admitted.name, admitted.depends_on, admitted.priority) == ("scored", [], 0)
