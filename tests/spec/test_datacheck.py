import json
from pathlib import Path

import pytest

from runner.data.files import DataFileError
from runner.data.sources import resolve
from runner.spec.check import check_spec
from runner.spec.datacheck import SourceReport, check_source
from runner.spec.models import DataSource
from tests.helpers import BASE_SPEC, write_jsonl
from tests.datasets import write_csv, write_parquet


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


# --- sources other than one JSONL file, through check_spec --------------------------------------------

MIXED_SPEC = BASE_SPEC.replace("  train: data/train.jsonl\n", """  train:
    - data/train.jsonl
    - {path: data/extra.parquet, weight: 2}
    - {path: data/qa.csv, columns: {prompt: question, completion: answer}}
""")


def diagnostics(path) -> list[tuple[str, str, str, int | None, str]]:
    return [(d.severity, Path(d.file).name, d.path, d.span.line if d.span else None, d.summary)
            for d in check_spec(path).diagnostics]


def test_sources_of_every_kind_are_checked_row_by_row(project, tmp_path):
    write_parquet(tmp_path / "data" / "extra.parquet", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)])
    write_csv(tmp_path / "data" / "qa.csv", [{"question": "q", "answer": "a", "source": "web"}] * 2)
    result = check_spec(project(MIXED_SPEC))
    assert result.diagnostics == []
    train = result.data["train"]
    assert [(r.source.label, r.rows, r.format) for r in train.sources] == [
        ("data/train.jsonl", 8, "prompt_completion"), ("data/extra.parquet", 3, "prompt_completion"),
        ("data/qa.csv", 2, "prompt_completion")]
    assert train.rows == 13 and train.sources[1].source.weight == 2


def test_bad_rows_in_parquet_and_csv_are_reported_with_their_row_index(project, tmp_path):
    write_parquet(tmp_path / "data" / "extra.parquet",
                  [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": None},
                   {"prompt": "p", "completion": ""}])
    write_csv(tmp_path / "data" / "qa.csv", [{"question": "q", "answer": "a"}, {"question": "q", "answer": " "}])
    found = diagnostics(project(MIXED_SPEC))
    assert found == [  # the spec's own diagnostics first
        ("error", "job.yaml", "data.train", 7, "3 of 13 rows (2 of 3 in data/extra.parquet, 1 of 2 in data/qa.csv) cannot be used"),
        ("error", "extra.parquet", "data.train", None, 'row index 1: "completion" must be a string, not null'),
        ("error", "extra.parquet", "data.train", None, 'row index 2: "completion" is empty'),
        ("error", "qa.csv", "data.train", 3, 'row index 1: "completion" is empty'),
    ]


def test_a_missing_hub_dataset_says_how_to_fetch_it(project, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    path = project(BASE_SPEC.replace("train: data/train.jsonl", "train: {hub: someorg/qa, split: train}"))
    (error,) = check_spec(path).diagnostics
    assert (error.path, error.span.line) == ("data.train", 6)
    assert error.summary.startswith("dataset someorg/qa is not in the Hugging Face cache")
    assert error.hint.startswith("fetch it where the hub is reachable: hf download someorg/qa --repo-type dataset")


def test_a_missing_file_that_looks_like_a_hub_id_hints_at_hub(project):
    (error,) = check_spec(project(BASE_SPEC.replace("data/train.jsonl", "someorg/qa"))).diagnostics
    assert error.summary == "someorg/qa does not exist"
    assert error.hint == "for a dataset on the Hugging Face hub write {hub: someorg/qa}"


def test_places_in_a_list_of_sources_and_in_one_source(project, tmp_path):
    path = project(BASE_SPEC.replace("  train: data/train.jsonl\n", "  train:\n    - data/train.jsonl\n"
                                     "    - {path: data/absent.parquet}\n    - {hub: a/b, columns: {promt: q}}\n"))
    assert [(d.path, d.span.line, d.summary) for d in check_spec(path).diagnostics] == [
        ("data.train[2].columns", 9, "'promt' is not a row key; did you mean 'prompt'? (row keys: chosen, completion, "
                                     "input, label, messages, non_preferred_output, preferred_output, prompt, "
                                     "rejected, text)")]
    path = project(BASE_SPEC.replace("  train: data/train.jsonl\n", "  train:\n    - data/train.jsonl\n"
                                     "    - {path: data/absent.parquet}\n"
                                     "  eval: {path: data/train.jsonl, weight: 2}\n"))
    assert [(d.path, d.span.line, d.summary) for d in check_spec(path).diagnostics] == [
        ("data.train[1]", 8, "data/absent.parquet does not exist"),
        ("data.eval.weight", 9, "weight mixes training data; every eval row is used once")]
    path = project(BASE_SPEC.replace("train: data/train.jsonl", "train: {path: data/train.jsonl, hub: a/b}"))
    assert [(d.path, d.summary) for d in check_spec(path).diagnostics] == [
        ("data.train", "give exactly one of path or hub (found: path, hub)")]


def test_sources_of_one_role_must_hold_one_format(project, tmp_path):
    write_parquet(tmp_path / "data" / "extra.parquet", [{"text": "t"}])
    path = project(BASE_SPEC.replace("train: data/train.jsonl", "train: [data/train.jsonl, data/extra.parquet]"))
    (error,) = check_spec(path).diagnostics
    assert error.summary == ("the sources of data.train hold different formats (data/train.jsonl: prompt_completion, "
                             "data/extra.parquet: text)")
