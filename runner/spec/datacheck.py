"""Streaming checks of a JSONL data file: every row parses and has the shape the method needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from runner import formats

SHOWN_BAD_ROWS = 5


@dataclass
class DataReport:
    path: Path
    rows: int = 0
    """Rows read (blank lines are not rows)."""
    format: str | None = None
    variant: str | None = None
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    """(line, reason) for the first few unusable rows."""
    bad_count: int = 0

    @property
    def usable(self) -> int:
        return self.rows - self.bad_count


class DataFileError(ValueError):
    """The file as a whole cannot be used (missing, wrong kind, empty)."""


def check_file(path: Path, declared_format: str, method: str | None) -> DataReport:
    """Read `path` row by row. Rows must share one format: the declared one, or the first row's."""
    if not path.exists():
        raise DataFileError(f"{path} does not exist")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory; name a .jsonl file")
    if path.suffix not in (".jsonl", ".json"):
        raise DataFileError(f"{path.name}: only JSON Lines files (.jsonl) are read; convert it to JSONL")
    report = DataReport(path)
    expected = None if declared_format == "auto" else declared_format
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            report.rows += 1
            reason = _row_problem(raw, expected, report)
            if reason:
                report.bad_count += 1
                if len(report.bad_rows) < SHOWN_BAD_ROWS:
                    report.bad_rows.append((line_number, reason))
            elif expected is None:
                expected = report.format
    if report.rows == 0:
        raise DataFileError(f"{path.name} has no rows")
    if report.format is None:
        report.format = expected
    if method and report.format and report.format not in formats.FORMATS_FOR_METHOD[method]:
        allowed = ", ".join(formats.FORMATS_FOR_METHOD[method])
        raise DataFileError(f"{path.name} holds {report.format} rows; method {method} takes {allowed}")
    return report


def _row_problem(raw: bytes, expected: str | None, report: DataReport) -> str | None:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"not valid JSON: {getattr(error, 'msg', error)}"
    try:
        found = formats.detect(row)
        if expected and found != expected:
            return f"row is {found}, but the file is {expected}"
        formats.check(row, found)
    except formats.RowError as error:
        return str(error)
    if report.format is None:
        report.format, report.variant = found, formats.variant(row)
    return None
