"""Streaming checks of a spec's data: every row of every source parses and has the shape the method needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runner import formats
from runner.data.files import DataFileError, RowAt
from runner.data.sources import RowSource
from runner.methods import registry

SHOWN_BAD_ROWS = 5


@dataclass
class SourceReport:
    source: RowSource
    rows: int = 0
    """Rows read (blank lines are not rows)."""
    format: str | None = None
    variant: str | None = None
    bad_rows: list[tuple[RowAt, str]] = field(default_factory=list)
    """(where, reason) for the first few unusable rows."""
    bad_count: int = 0
    unchecked: str | None = None
    """Why the rows could not be read here (pyarrow is missing); then nothing about them is known."""

    @property
    def usable(self) -> int:
        return self.rows - self.bad_count


@dataclass
class DataReport:
    """One role's data (train or eval): its sources, in the spec's order."""

    role: str
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(report.rows for report in self.sources)

    @property
    def usable(self) -> int:
        return sum(report.usable for report in self.sources)

    @property
    def bad_count(self) -> int:
        return sum(report.bad_count for report in self.sources)

    @property
    def format(self) -> str | None:
        return next((report.format for report in self.sources if report.format), None)

    @property
    def variant(self) -> str | None:
        return next((report.variant for report in self.sources if report.variant), None)

    @property
    def checked(self) -> bool:
        return all(report.unchecked is None for report in self.sources)


def check_source(source: RowSource, declared_format: str, method: str | None,
                 visit: Callable[[dict], None] | None = None) -> SourceReport:
    """Read a source row by row. Its rows must share one format: the declared one, or the first row's.
    Without pyarrow, parquet and arrow rows are not read, and the report says why. `visit` sees every
    usable row (the evals' overlap check hashes the training prompts in the same pass)."""
    report = SourceReport(source)
    report.unchecked = source.unreadable_here()
    if report.unchecked:
        return report
    for at, row, problem in source.rows(None if declared_format == "auto" else declared_format):
        report.rows += 1
        if problem:
            report.bad_count += 1
            if len(report.bad_rows) < SHOWN_BAD_ROWS:
                report.bad_rows.append((at, problem))
        else:
            if report.format is None:
                report.format, report.variant = formats.detect(row), formats.variant(row)
            if visit is not None:
                visit(row)
    if report.rows == 0:
        raise DataFileError(f"{source.label} has no rows")
    accepted = registry.get(method).formats if method else ()
    if method and report.format and report.format not in accepted:
        allowed = ", ".join(accepted)
        raise DataFileError(f"{source.label} holds {report.format} rows; method {method} takes {allowed}")
    return report
