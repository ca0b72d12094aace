"""The kinds of data file runner reads, each with a bounded reader of its raw rows.

A reader yields `RawRow`s: where the row is (`RowAt`), its value (a JSON-like object), or the
reason it could not be read. What the value must look like is `runner.formats`' business.

| kind    | suffixes        | read with          | a row is at             |
|---------|-----------------|--------------------|-------------------------|
| jsonl   | .jsonl, .json   | the stdlib         | its line                |
| csv     | .csv            | the stdlib         | its row index (and line)|
| parquet | .parquet        | pyarrow, in batches| its row index           |
| arrow   | .arrow (IPC stream or file, as `save_to_disk` writes) | pyarrow | its row index |

Every file is opened with `open_regular` (a FIFO or a device is refused before a byte is read), and
every reader holds a bounded amount at a time: a JSONL or CSV row longer than MAX_ROW_BYTES is a bad
row, skipped without being held; a parquet file whose footer or row groups claim more than
MAX_FOOTER_BYTES / MAX_ROW_GROUP_BYTES is refused before anything is decoded; arrow batches are
validated in full before a value is taken out of them. pyarrow is imported only to read parquet
and arrow rows; without it those rows cannot be checked (`pyarrow_missing` says so).
"""

from __future__ import annotations

import csv
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from runner.confine import quoted
from runner.errors import RunnerError
from runner.readers import MAX_JSON_DEPTH, loads_bounded, open_regular

MAX_ROW_BYTES = 16 * 2**20
"""A JSONL or CSV row longer than this is rejected (and skipped without being held in memory)."""
MAX_FOOTER_BYTES = 64 * 2**20
"""Parquet metadata (schema, row groups, statistics) of real files is kilobytes to a few megabytes."""
MAX_ROW_GROUP_BYTES = 512 * 2**20
"""A parquet row group is decoded whole; the datasets library writes them at about 100 MB."""
BATCH_ROWS = 1024


class DataFileError(RunnerError):
    """A data file, or a source, that cannot be used as a whole (missing, wrong kind, unreadable)."""


class RowAt(NamedTuple):  # NamedTuples, not dataclasses: one per row, and quick to define (validate's start-up)
    """Where a row is: a line for JSONL, a row index (from 0, as `dataset[i]`) for tabular files; CSV
    has both."""

    file: Path
    line: int | None = None
    index: int | None = None

    def describe(self) -> str:
        if self.index is None:
            return f"line {self.line}"
        return f"row index {self.index}" + (f" (line {self.line})" if self.line is not None else "")

    def to_json(self) -> dict:
        record: dict[str, Any] = {"file": str(self.file)}
        if self.line is not None:
            record["line"] = self.line
        if self.index is not None:
            record["row"] = self.index
        return record


class RawRow(NamedTuple):
    at: RowAt
    value: Any = None
    problem: str | None = None
    """Why the row could not be read; then `value` is None."""


Reader = Callable[[Path, "list[str] | None"], Iterator[RawRow]]
"""(path, the columns wanted, or None for all) -> the file's rows."""


class FileKind(NamedTuple):
    name: str
    suffixes: tuple[str, ...]
    read: Reader
    needs_pyarrow: bool
    magic: tuple[bytes, ...] = ()
    """Bytes a file of this kind starts with (and, for parquet, ends with); empty: any."""

    def sniff(self, path: Path) -> None:
        """Raise DataFileError when the file is plainly not of this kind (no pyarrow needed)."""
        if not self.magic:
            return
        with open_regular(path) as handle:
            head = handle.read(8)
            size = os.fstat(handle.fileno()).st_size
            tail = b""
            if self.name == "parquet" and size >= 8:
                handle.seek(size - 4)
                tail = handle.read(4)
        if not any(head.startswith(magic) for magic in self.magic) or (self.name == "parquet" and tail != b"PAR1"):
            where = "start and end" if self.name == "parquet" else "start"
            raise DataFileError(f"{path} is not {_article(self.name)} {self.name} file (it lacks the marker "
                                f"{self.name} files {where} with)")


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def kind_of(path: Path) -> FileKind | None:
    return next((kind for kind in KINDS if path.suffix.lower() in kind.suffixes), None)


def pyarrow_install() -> str:
    """The command that installs pyarrow alone (runner's `data` extra; `train` brings it too)."""
    from runner.install import pip_install

    return pip_install("data")


def pyarrow_missing() -> str | None:
    """Why parquet and arrow rows cannot be read here, or None when they can."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "pyarrow is not installed"
    return None


# --- JSON Lines -------------------------------------------------------------------------------------

def read_jsonl(path: Path, columns: list[str] | None = None) -> Iterator[RawRow]:
    """Every non-blank line; a row longer than MAX_ROW_BYTES or nested deeper than MAX_JSON_DEPTH is
    a bad row, not a crash."""
    with open_regular(path) as handle:
        for line, raw in enumerate(_lines(handle, path), start=1):
            if raw is None:
                yield RawRow(RowAt(path, line), problem=_too_long())
                continue
            if not raw.strip():
                continue
            try:
                yield RawRow(RowAt(path, line), loads_bounded(raw))
            except ValueError as error:
                yield RawRow(RowAt(path, line), problem=_json_problem(raw, error))


def _json_problem(raw: bytes, error: ValueError) -> str:
    """What is wrong with a JSON Lines row, placed in the row itself: json's own "line 2 column 1 (char 16)"
    counts from the row's start and past its newline, which misleads next to the file's line number."""
    if not isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error}"
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    if error.pos >= len(text):
        return f"not valid JSON: the row ends before its value does ({error.msg})"
    return f"not valid JSON at column {error.colno}: {error.msg}"


def _too_long() -> str:
    return f"the row is longer than {MAX_ROW_BYTES // 2**20} MiB"


def _lines(handle: BinaryIO, path: Path) -> Iterator[bytes | None]:
    """Each line of a file, or None for one longer than MAX_ROW_BYTES (skipped, never held whole). A NUL
    byte ends the file's reading with a DataFileError: text never holds one, and a binary or sparse file
    (a terabyte of zeros reads for many minutes) is no data file."""
    while True:
        start = handle.tell()
        raw = handle.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        _refuse_nul(raw, start, path)
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            while chunk := handle.read(1 << 20):  # the rest of the line, a megabyte at a time
                _refuse_nul(chunk, handle.tell() - len(chunk), path)
                newline = chunk.find(b"\n")
                if newline >= 0:
                    handle.seek(newline + 1 - len(chunk), os.SEEK_CUR)
                    break
            yield None
            continue
        yield raw


def _refuse_nul(data: bytes, offset: int, path: Path) -> None:
    at = data.find(b"\0")
    if at >= 0:
        raise DataFileError(f"{path} holds a NUL byte at offset {offset + at:,}: it is not text (a binary or "
                            "sparse file?)", "JSON Lines and CSV files are UTF-8 text")


# --- CSV --------------------------------------------------------------------------------------------

class _LongLine(Exception):
    """A CSV row longer than MAX_ROW_BYTES (raised by the line reader, turned into a bad row)."""


class _LineFeed:
    """The lines of a file as text for csv.reader, counted; a line longer than MAX_ROW_BYTES raises
    _LongLine, after which a new reader goes on at the next line (the feed is not a generator, which
    an exception would end)."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.lines, self.count = _lines(handle, path), 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        raw = next(self.lines)
        self.count += 1
        if raw is None:
            raise _LongLine
        text = raw.decode("utf-8", errors="replace")
        return text.removeprefix("\ufeff") if self.count == 1 else text


def read_csv(path: Path, columns: list[str] | None = None) -> Iterator[RawRow]:
    """Rows of a CSV file with a header line, as {column: text}. Cells are text, as written; a `label`
    cell of true/false (any case) is a boolean (KTO's column). A row longer than MAX_ROW_BYTES, or one
    the csv module cannot parse, is a bad row, and reading goes on at the next line."""
    csv.field_size_limit(MAX_ROW_BYTES)
    with open_regular(path) as handle:
        feed = _LineFeed(handle, path)
        reader = csv.reader(feed)
        try:
            header = next(reader)
        except (StopIteration, _LongLine, csv.Error) as error:
            problem = "it has no header line" if isinstance(error, StopIteration) else "its header cannot be read"
            raise DataFileError(f"{path}: {problem}") from None
        _require_columns(path, header, columns)
        index = 0
        while True:
            at = RowAt(path, feed.count + 1, index)
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (_LongLine, csv.Error) as error:
                reason = _too_long() if isinstance(error, _LongLine) else f"not valid CSV: {error}"
                yield RawRow(at, problem=reason)
                reader, index = csv.reader(feed), index + 1
                continue
            if not cells:  # a blank line is no row
                continue
            if len(cells) != len(header):
                yield RawRow(at, problem=f"{len(cells)} cells, but the header names {len(header)} columns")
            else:
                yield RawRow(at, {name: _cell(name, text) for name, text in zip(header, cells)})
            index += 1


def _cell(name: str, text: str) -> Any:
    if name == "label" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    return text


def _require_columns(path: Path, present: list[str], wanted: list[str] | None) -> None:
    missing = [column for column in wanted or () if column not in present]
    if missing:
        shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
        raise DataFileError(f"{path} has no column {', '.join(repr(c) for c in missing)} "
                            f"(its columns: {quoted(shown)})")


# --- parquet and arrow (pyarrow) ----------------------------------------------------------------------

def read_parquet(path: Path, columns: list[str] | None = None) -> Iterator[RawRow]:
    """Rows of a parquet file, a batch of BATCH_ROWS at a time; its footer and row-group sizes are
    checked before anything is decoded."""
    import pyarrow.parquet as pq

    with open_regular(path) as handle, _arrow_errors(path, "parquet"):
        _check_parquet_footer(path, handle)
        parquet = pq.ParquetFile(handle)
        metadata = parquet.metadata
        for group in range(metadata.num_row_groups):
            size = metadata.row_group(group).total_byte_size
            if size > MAX_ROW_GROUP_BYTES:
                raise DataFileError(f"{path}: row group {group} holds {size:,} bytes decoded; at most "
                                    f"{MAX_ROW_GROUP_BYTES:,} are read at once (write it with smaller row groups)")
        _check_schema(path, parquet.schema_arrow, columns)
        yield from _batch_rows(path, parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns), validate=False)


def _check_parquet_footer(path: Path, handle: BinaryIO) -> None:
    """A parquet file ends with its metadata, the metadata's length and PAR1: refuse a length that the
    file cannot hold, or that no real file has, before pyarrow allocates it."""
    size = os.fstat(handle.fileno()).st_size
    if size < 12:
        raise DataFileError(f"{path} is not a parquet file ({size} bytes)")
    handle.seek(size - 8)
    length, magic = struct.unpack("<I4s", handle.read(8))
    if magic != b"PAR1":
        raise DataFileError(f"{path} is not a parquet file (it does not end with PAR1)")
    if length > size - 12 or length > MAX_FOOTER_BYTES:
        raise DataFileError(f"{path}: its metadata claims {length:,} bytes (the file has {size:,}; at most "
                            f"{MAX_FOOTER_BYTES:,} are read)")
    handle.seek(0)


def read_arrow(path: Path, columns: list[str] | None = None) -> Iterator[RawRow]:
    """Rows of an Arrow IPC file or stream (`save_to_disk` writes streams), a record batch at a time;
    each batch is validated in full before a value is taken out of it."""
    import pyarrow.ipc as ipc

    with open_regular(path) as handle, _arrow_errors(path, "arrow"):
        is_file = handle.read(6) == b"ARROW1"
        handle.seek(0)
        if is_file:
            reader = ipc.open_file(handle)
            batches: Iterator = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            reader = ipc.open_stream(handle)
            batches = iter(reader)
        _check_schema(path, reader.schema, columns)
        if columns is not None:
            batches = (batch.select(columns) for batch in batches)
        yield from _batch_rows(path, batches, validate=True)


def _batch_rows(path: Path, batches, *, validate: bool) -> Iterator[RawRow]:
    index = 0
    for batch in batches:
        if validate:
            batch.validate(full=True)
        for value in batch.to_pylist():
            yield RawRow(RowAt(path, index=index), {key: _plain(item) for key, item in value.items()})
            index += 1


def _plain(value: Any) -> Any:
    """A value as JSON would hold it: a struct's null fields are absent keys (a struct column has
    every field in every row; JSON rows leave out what they do not have)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _check_schema(path: Path, schema, columns: list[str] | None) -> None:
    _require_columns(path, list(schema.names), columns)
    stack = [(field.type, 1) for field in schema]
    while stack:
        kind, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise DataFileError(f"{path}: its columns are nested more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((kind.field(i).type, depth + 1) for i in range(kind.num_fields))


class _arrow_errors:
    """pyarrow's errors (a bad file, a failed allocation) as a DataFileError that names the file."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        import pyarrow as pa

        if error is None or isinstance(error, (DataFileError, GeneratorExit)):
            return False
        if isinstance(error, (pa.ArrowException, OSError, ValueError, MemoryError)):
            reason = "too large to read here" if isinstance(error, MemoryError) else str(error).splitlines()[0]
            raise DataFileError(f"{self.path} is not a readable {self.kind} file: {reason}") from None
        return False


KINDS: tuple[FileKind, ...] = (
    FileKind("jsonl", (".jsonl", ".json"), read_jsonl, needs_pyarrow=False),
    FileKind("csv", (".csv",), read_csv, needs_pyarrow=False),
    FileKind("parquet", (".parquet",), read_parquet, needs_pyarrow=True, magic=(b"PAR1",)),
    FileKind("arrow", (".arrow",), read_arrow, needs_pyarrow=True, magic=(b"ARROW1", b"\xff\xff\xff\xff")),
)
SUFFIXES = tuple(suffix for kind in KINDS for suffix in kind.suffixes)
