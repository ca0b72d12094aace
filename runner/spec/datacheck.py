"""Streaming checks of a JSONL data file: every row parses and has the shape the method needs."""

from __future__ import annotations

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
    try:
        return _check_file(path, declared_format, method)
    except OSError as error:  # not a regular file (a FIFO or a device would never end), a name too long, ...
        raise DataFileError(str(error) if error.strerror is None else f"{path}: {error.strerror}") from None


def _check_file(path: Path, declared_format: str, method: str | None) -> DataReport:
    if not path.exists():
        raise DataFileError(f"{path} does not exist")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory; name a .jsonl file")
    if path.suffix not in (".jsonl", ".json"):
        raise DataFileError(f"{path.name}: only JSON Lines files (.jsonl) are read; convert it to JSONL")
    report = DataReport(path)
    for line, row, problem in formats.read_rows(path, None if declared_format == "auto" else declared_format):
        report.rows += 1
        if problem:
            report.bad_count += 1
            if len(report.bad_rows) < SHOWN_BAD_ROWS:
                report.bad_rows.append((line, problem))
        elif report.format is None:
            report.format, report.variant = formats.detect(row), formats.variant(row)
    if report.rows == 0:
        raise DataFileError(f"{path.name} has no rows")
    if method and report.format and report.format not in formats.FORMATS_FOR_METHOD[method]:
        allowed = ", ".join(formats.FORMATS_FOR_METHOD[method])
        raise DataFileError(f"{path.name} holds {report.format} rows; method {method} takes {allowed}")
    return report
