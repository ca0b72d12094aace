"""The file readers: rows and where they are, bounded reading, and a clean error for a file that is not
what its name says."""

from __future__ import annotations

import os
import struct

import pytest

from runner.data import files
from runner.data.files import DataFileError, RowAt, kind_of
from tests.datasets import write_arrow, write_csv, write_parquet

ROWS = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]


def read(path, columns=None):
    return [(r.at, r.value, r.problem) for r in kind_of(path).read(path, columns)]


@pytest.mark.parametrize("writer", [
    write_parquet, write_arrow, lambda path, rows: write_arrow(path, rows, stream=False)],
    ids=["parquet", "arrow stream", "arrow file"])
def test_tabular_rows_are_located_by_row_index(tmp_path, writer):
    suffix = ".parquet" if writer is write_parquet else ".arrow"
    path = writer(tmp_path / f"d{suffix}", ROWS)
    assert read(path) == [(RowAt(path, index=i), row, None) for i, row in enumerate(ROWS)]
    assert read(path, ["completion"])[4] == (RowAt(path, index=4), {"completion": "a4"}, None)


def test_parquet_streams_in_batches_across_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "BATCH_ROWS", 3)
    rows = [{"text": str(i)} for i in range(20)]
    path = write_parquet(tmp_path / "d.parquet", rows, row_group_size=7)
    assert [value["text"] for _, value, _ in read(path)] == [str(i) for i in range(20)]


def test_a_missing_column_names_the_columns_there_are(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", ROWS)
    with pytest.raises(DataFileError, match=r"has no column 'question' \(its columns: prompt, completion\)"):
        read(path, ["question"])


def test_null_struct_fields_are_absent_keys_and_top_level_nulls_stay(tmp_path):
    """A struct column has every field in every row: a message without a weight reads as one without the key."""
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}],
             "note": None}]
    path = write_parquet(tmp_path / "d.parquet", rows)
    (_, value, _), = read(path)
    assert value == {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}],
                     "note": None}


def test_csv_rows_have_an_index_and_a_line_and_bad_rows_do_not_stop_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_ROW_BYTES", 100)
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion,label\n"q0","a\nwith a newline",true\nq1,a1\n\n'
                    + "q2," + "x" * 300 + ",false\nq3,a3,FALSE\n")
    assert read(path) == [
        (RowAt(path, 2, 0), {"prompt": "q0", "completion": "a\nwith a newline", "label": True}, None),
        (RowAt(path, 4, 1), None, "2 cells, but the header names 3 columns"),
        (RowAt(path, 6, 2), None, "the row is longer than 0 MiB"),
        (RowAt(path, 7, 3), {"prompt": "q3", "completion": "a3", "label": False}, None),
    ]
    assert RowAt(path, 7, 3).describe() == "row index 3 (line 7)" and RowAt(path, 3).describe() == "line 3"


def test_csv_written_by_the_csv_module_reads_back(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS)
    assert [value for _, value, _ in read(path)] == ROWS


def test_csv_without_a_header_is_a_file_error(tmp_path):
    (tmp_path / "d.csv").write_text("")
    with pytest.raises(DataFileError, match="no header line"):
        read(tmp_path / "d.csv")


@pytest.mark.parametrize("name, content, message", [
    ("d.parquet", b"PAR1" + b"\0" * 20 + struct.pack("<I", 2**31) + b"PAR1", "its metadata claims 2,147,483,648 bytes"),
    ("d.parquet", b"PAR1" + b"\0" * 20, "does not end with PAR1"),
    ("d.parquet", b"PAR1" + b"\xff" * 40 + struct.pack("<I", 30) + b"PAR1", "is not a readable parquet file"),
    ("d.arrow", b"\xff\xff\xff\xff" + b"\x10\0\0\0" + b"\xff" * 40, "is not a readable arrow file"),
    ("d.arrow", b"ARROW1\0\0" + b"\0" * 40, "is not a readable arrow file"),
])
def test_broken_tabular_files_are_file_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataFileError, match=message):
        read(tmp_path / name)


def test_a_parquet_row_group_too_big_to_decode_at_once_is_refused_before_decoding(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "d.parquet", [{"text": f"{i}" + "x" * 1000} for i in range(10)])
    monkeypatch.setattr(files, "MAX_ROW_GROUP_BYTES", 5000)
    with pytest.raises(DataFileError, match=r"row group 0 holds [\d,]+ bytes decoded; at most 5,000"):
        read(path)


def test_columns_nested_deeper_than_json_rows_may_be_are_refused(tmp_path):
    value = "x"
    for _ in range(70):
        value = {"a": value}
    path = write_parquet(tmp_path / "d.parquet", [{"text": value}])
    with pytest.raises(DataFileError, match="nested more than 64 levels"):
        read(path)


def test_sniffing_needs_no_pyarrow_and_refuses_a_misnamed_file(tmp_path):
    (tmp_path / "d.parquet").write_text('{"text": "a"}\n')
    with pytest.raises(DataFileError, match=r"is not a parquet file \(it lacks the marker parquet files start and end with\)"):
        kind_of(tmp_path / "d.parquet").sniff(tmp_path / "d.parquet")
    kind_of(tmp_path / "d.parquet").sniff(write_parquet(tmp_path / "ok.parquet", ROWS))


def test_a_fifo_named_like_parquet_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.parquet")
    with pytest.raises(OSError, match="FIFO"):
        read(tmp_path / "pipe.parquet")


def test_a_bad_json_row_is_placed_within_its_own_line(tmp_path):
    """json's "line 2 column 1 (char 16)" counts from the row and past its newline: beside the file's line
    number it pointed at the wrong line."""
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "q", "completion": "a"}\n' * 8 + '{"prompt": "q",\n' + '{"prompt": "q" "c": 1}\n')
    problems = [(at.line, problem) for at, _, problem in read(path) if problem]
    assert problems == [
        (9, "not valid JSON: the row ends before its value does (Expecting property name enclosed in double quotes)"),
        (10, "not valid JSON at column 16: Expecting ',' delimiter")]
