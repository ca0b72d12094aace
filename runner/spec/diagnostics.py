"""Diagnostics: every problem found in a spec, with its place in the file and a hint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Span:
    """A place in a file; lines and columns count from 1."""

    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    summary: str
    file: str
    path: str = ""
    """The field path, like `trainable.lora.r`; empty for whole-file problems."""
    span: Span | None = None
    detail: str = ""
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format_text(self) -> str:
        where = self.file
        if self.span:
            where += f":{self.span.line}:{self.span.column}"
        field = f"{self.path}: " if self.path else ""
        text = f"{where}: {self.severity}: {field}{self.summary}"
        if self.detail:
            text += "".join(f"\n    {line}" for line in self.detail.splitlines())
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


def sort_key(diagnostic: Diagnostic) -> tuple:
    span = diagnostic.span
    return (diagnostic.file, span.line if span else 0, span.column if span else 0, diagnostic.path)
