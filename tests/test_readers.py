"""The bounded readers, and the JSONL rows read through them: regular files only, bounded lines and
depth, and (fuzzed) never an exception whatever the bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import formats
from runner.data import files
from runner.readers import FileTooLarge, UnreadableFile, loads_bounded, nested_deeper_than, open_regular, read_regular

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROW_FRAGMENTS = ['{"text": "a"}', '{"prompt": "p", "completion": "c"}', '{"messages": [', '{"role": "assistant", ',
                 '"content": "x"}', "]}", "[", "]", "{", "}", '"', "\\", '\\"', ",", ":", "\n", " ", "null", "1e999",
                 "NaN", "\x00", "\xff", '{"chosen": "a", "rejected": "a"}', '"weight": 0.5', "9" * 5000]


def test_fifos_devices_and_folders_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    for name, kind in (("pipe", "FIFO"), ("zero", "character device"), (".", "directory")):
        with pytest.raises(UnreadableFile, match=kind):
            open_regular(tmp_path / name)


def test_read_regular_refuses_large_files(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(FileTooLarge, match="101 bytes; at most 100"):
        read_regular(tmp_path / "big", 100)
    assert read_regular(tmp_path / "big", 101) == b"x" * 101


@pytest.mark.parametrize("text, deeper", [
    ('{"a": [[1]]}', False), ("[" * 65 + "]" * 65, True), ('"' + "[" * 100 + '"', False),
    ('["\\"' + "[" * 100 + '"]', False), ("[" * 64 + "]" * 64, False), ('{"a": "\\\\"}' + "[" * 70, True),
])
def test_depth_is_counted_outside_strings(text, deeper):
    assert nested_deeper_than(text.encode(), 64) is deeper


def test_loads_bounded_refuses_deep_json_before_parsing():
    with pytest.raises(ValueError, match="nested more than 64"):
        loads_bounded(b"[" * 100_000 + b"]" * 100_000)
    assert loads_bounded(b'{"a": [1, 2]}') == {"a": [1, 2]}


def read_rows(path, format_name):
    """(line, row, problem) of a JSONL file, checked as the validator checks it."""
    records = ((r.at.line, r.value, r.problem) for r in files.read_jsonl(path))
    return formats.checked(records, format_name)


def test_long_rows_are_skipped_and_the_next_row_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_ROW_BYTES", 1000)
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "' + b"x" * 5000 + b'"}\n{"text": "b"}\n' + b"y" * 3000)
    assert [(line, row, problem) for line, row, problem in read_rows(path, None)] == [
        (1, None, "the row is longer than 0 MiB"), (2, {"text": "b"}, None), (3, None, "the row is longer than 0 MiB")]


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_are_rows_or_problems(tmp_path, data):
    check_rows(tmp_path, data)


@FUZZ
@given(st.lists(st.sampled_from(ROW_FRAGMENTS), max_size=40).map("".join))
def test_json_shaped_rows_are_rows_or_problems(tmp_path, text):
    check_rows(tmp_path, text.encode("utf-8", errors="surrogatepass"))


def check_rows(tmp_path, data: bytes) -> None:
    """Every line is a row or a problem, in order; a NUL byte (a binary or sparse file) refuses the whole
    file with the data file error that names it, and nothing else does."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    for format_name in (None, "text", "messages"):
        lines = []
        try:
            for line, row, problem in read_rows(path, format_name):
                assert (row is None) != (problem is None)
                lines.append(line)
        except files.DataFileError as refused:
            assert b"\0" in data and "NUL byte" in str(refused), refused
            continue
        assert lines == sorted(set(lines))
