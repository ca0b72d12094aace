"""The validation report: what `runner validate --format json` prints, what the watch daemon's checking
worker sends back for one spec, and what admission (runner.daemon.admission) reads. One typed record for
the three, so the daemon reads the report by its fields, never by string keys.

Shaped like `terraform validate -json`, with a record per file. A field that validate leaves out (a
file's name when its spec is invalid, a diagnostic's place when it has none) is left out of the JSON
too: records are written with the fields they were given (`to_json`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from runner.spec.check import SpecResult
    from runner.spec.diagnostics import Diagnostic

MAX_PRIORITY = 100
"""A spec's priority is within ±100 (runner.spec.models.JobSpec.priority)."""


class Record(BaseModel):
    """Strict: a report is read back exactly as validate wrote it (an int is never a bool or a string)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def to_json(self) -> dict:
        return self.model_dump(exclude_unset=True)


class Position(Record):
    line: int
    column: int


class Place(Record):
    filename: str
    start: Position | None = None
    end: Position | None = None


class DiagnosticRecord(Record):
    """One diagnostic, as terraform writes it, plus the field `path` and a `hint`."""

    severity: Literal["error", "warning"]
    summary: str
    detail: str = ""
    range: Place
    path: str = ""
    """The field path, like `trainable.lora.r`; empty for whole-file problems."""
    hint: str | None = None

    @classmethod
    def of(cls, diagnostic: Diagnostic) -> DiagnosticRecord:
        span = diagnostic.span
        place = Place(filename=diagnostic.file) if span is None else Place(
            filename=diagnostic.file, start=Position(line=span.line, column=span.column),
            end=Position(line=span.end_line, column=span.end_column))
        return cls(severity=diagnostic.severity, summary=diagnostic.summary, detail=diagnostic.detail, range=place,
                   path=diagnostic.path, hint=diagnostic.hint)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def where(self) -> str:
        """`file:line: field: summary`, leaving out what it does not have."""
        line = f":{self.range.start.line}" if self.range.start else ""
        field = f" {self.path}:" if self.path else ""
        return f"{self.range.filename}{line}:{field} {self.summary}"


class CodeUse(Record):
    """A setting that runs code other than runner's own (runner.spec.check.CodeUse)."""

    kind: str
    """reward_function | remote_code"""
    path: str
    what: str
    """The function (`module:function`) or the model whose code runs."""
    line: int | None


class SourceCheck(Record):
    """One source of rows, as validate read it."""

    source: str
    kind: str
    rows: int
    usable_rows: int
    format: str | None
    variant: str | None
    weight: float
    unchecked: str | None
    """Why its rows could not be read here (then nothing about them is known)."""


class DataCheck(Record):
    """One role's data (train or eval)."""

    rows: int
    usable_rows: int
    format: str | None
    variant: str | None
    checked: bool
    sources: list[SourceCheck]


class FileRecord(Record):
    """One spec file; its job's facts only when the spec is valid."""

    file: str
    valid: bool
    name: str | None = None
    method: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    """The specs it builds on (`{job: NAME}`)."""
    runs_code: list[CodeUse] = Field(default_factory=list)
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    data: dict[str, DataCheck] = Field(default_factory=dict)


class DataFileUse(Record):
    """A data file named to validate, and the specs that use it."""

    file: str
    specs: list[str]


class ValidationReport(Record):
    format_version: Literal["1.0"]
    valid: bool
    error_count: int
    warning_count: int
    diagnostics: list[DiagnosticRecord]
    files: list[FileRecord]
    data_files: list[DataFileUse] | None = None
    """The data files given (validate DATAFILE), with the specs that use them; absent when none were given."""

    @classmethod
    def of(cls, results: list[SpecResult], data_files: list[DataFileUse] | None = None) -> ValidationReport:
        diagnostics = [DiagnosticRecord.of(d) for result in results for d in result.diagnostics]
        fields = {} if data_files is None else {"data_files": data_files}
        return cls(format_version="1.0", valid=not any(d.is_error for d in diagnostics),
                   error_count=sum(d.is_error for d in diagnostics),
                   warning_count=sum(not d.is_error for d in diagnostics), diagnostics=diagnostics,
                   files=[_file_record(result) for result in results], **fields)


def _file_record(result: SpecResult) -> FileRecord:
    from runner.spec.check import display_path
    from runner.spec.jobs import jobs_named

    spec = result.spec
    job = {} if spec is None else dict(
        name=spec.name, method=spec.method, depends_on=jobs_named(spec),
        runs_code=[CodeUse(**use.to_json()) for use in result.runs_code], priority=spec.priority)
    data = {role: DataCheck(rows=report.rows, usable_rows=report.usable, format=report.format, variant=report.variant,
                            checked=report.checked,
                            sources=[SourceCheck(source=part.source.label, kind=part.source.kind, rows=part.rows,
                                                 usable_rows=part.usable, format=part.format, variant=part.variant,
                                                 weight=part.source.weight, unchecked=part.unchecked)
                                     for part in report.sources])
            for role, report in result.data.items()}
    return FileRecord(file=display_path(result.source or result.path), valid=not result.errors, **job, data=data)
