import json
from pathlib import Path

import pytest

from runner.data.files import DataFileError
from runner.data.sources import resolve
from runner.spec.datacheck import SourceReport, check_source
from runner.spec.models import DataSource
from tests.conftest import write_jsonl


def check_file(path: Path, declared_format: str, method: str | None) -> SourceReport:
    return check_source(resolve(DataSource.model_validate(str(path)), Path("."), "train"), declared_format, method)


def lines(report: SourceReport) -> list[tuple[int, str]]:
    return [(at.line, reason) for at, reason in report.bad_rows]


def test_rows_formats_and_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "", {"text": ""}, {"prompt": "p"}, {"text": "b"}])
    report = check_file(path, "auto", "sft")
    assert (report.rows, report.format, report.bad_count) == (4, "text", 2)
    assert lines(report) == [(3, '"text" is empty'),
                               (4, 'row is prompt_only (it has "prompt"), but the file is text; missing "text" '
                                   '(text rows have "text")')]


def test_declared_format_is_enforced(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    report = check_file(path, "messages", None)
    assert lines(report)[0][0] == 1 and lines(report)[0][1].startswith('row is text (it has "text"), but the file '
                                                                           'is messages; missing "messages"')


def test_method_must_accept_the_format(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(DataFileError, match="method dpo takes preference"):
        check_file(path, "auto", "dpo")


def test_kto_rows_need_a_boolean_label_at_their_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "p", "completion": "good", "label": True},
        {"prompt": "p", "completion": "bad", "label": False},
        {"prompt": "p", "completion": "no label"},
        {"prompt": "p", "completion": "text label", "label": "yes"},
        {"prompt": "p", "completion": "number label", "label": 1},
    ])
    report = check_file(path, "auto", "kto")
    assert report.format == "unpaired" and report.bad_count == 3
    assert lines(report) == [
        (3, 'missing "label" (unpaired rows have "prompt", "completion" and "label")'),
        (4, '"label" must be true (a desirable answer) or false, not a string'),
        (5, '"label" must be true (a desirable answer) or false, not a number'),
    ]


def test_a_misnamed_key_is_named(tmp_path):
    """Not "row is prompt_only, but the file is prompt_completion" (issue 13): the key that is wrong."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "answer": "c"},
                                              {"prompt": "p", "completions": "c"}])
    report = check_file(path, "auto", "sft")
    assert lines(report) == [
        (2, 'missing "completion" (prompt_completion rows have "prompt" and "completion"); unexpected "answer"'),
        (3, 'missing "completion" (prompt_completion rows have "prompt" and "completion"); unexpected '
            '"completions": did you mean "completion"?'),
    ]


def test_rl_takes_the_prompts_of_other_formats(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    assert check_file(path, "auto", "ppo").format == "prompt_completion"


@pytest.mark.parametrize("name, content, message", [
    ("absent.jsonl", None, "does not exist"),
    ("data.txt", "a,b\n", "runner reads .jsonl, .json, .csv, .parquet and .arrow files"),
    ("data.csv", "a,b\n", "has no rows"),
    ("empty.jsonl", "\n\n", "has no rows"),
])
def test_whole_file_problems(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        check_file(path, "auto", "sft")


def test_only_the_first_bad_rows_are_kept_but_all_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}] + ["nope"] * 50)
    report = check_file(path, "auto", "sft")
    assert report.bad_count == 50 and len(report.bad_rows) == 5 and lines(report)[0][0] == 2


def test_a_large_file_streams(tmp_path):
    path = tmp_path / "big.jsonl"
    row = json.dumps({"messages": [{"role": "user", "content": "q" * 50}, {"role": "assistant", "content": "a"}]})
    path.write_text((row + "\n") * 100_000)
    report = check_file(path, "auto", "sft")
    assert report.rows == 100_000 and report.bad_count == 0
