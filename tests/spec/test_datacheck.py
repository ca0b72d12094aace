import json

import pytest

from runner.spec.datacheck import DataFileError, check_file
from tests.conftest import write_jsonl


def test_rows_formats_and_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "", {"text": ""}, {"prompt": "p"}, {"text": "b"}])
    report = check_file(path, "auto", "sft")
    assert (report.rows, report.format, report.bad_count) == (4, "text", 2)
    assert report.bad_rows == [(3, '"text" is empty'), (4, "row is prompt_only, but the file is text")]


def test_declared_format_is_enforced(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    report = check_file(path, "messages", None)
    assert report.bad_rows == [(1, "row is text, but the file is messages")]


def test_method_must_accept_the_format(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(DataFileError, match="method dpo takes preference"):
        check_file(path, "auto", "dpo")


def test_rl_takes_the_prompts_of_other_formats(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    assert check_file(path, "auto", "ppo").format == "prompt_completion"


@pytest.mark.parametrize("name, content, message", [
    ("absent.jsonl", None, "does not exist"),
    ("data.csv", "a,b\n", "only JSON Lines"),
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
    assert report.bad_count == 50 and len(report.bad_rows) == 5 and report.bad_rows[0][0] == 2


def test_a_large_file_streams(tmp_path):
    path = tmp_path / "big.jsonl"
    row = json.dumps({"messages": [{"role": "user", "content": "q" * 50}, {"role": "assistant", "content": "a"}]})
    path.write_text((row + "\n") * 100_000)
    report = check_file(path, "auto", "sft")
    assert report.rows == 100_000 and report.bad_count == 0
