"""Admission: is a spec the daemon found a job it may run?

Everything a spec controls is read outside the daemon's process: the checking worker
(runner.daemon.worker, a child with a memory limit and a deadline per request) makes the report of
`runner validate --format json --source SPEC SNAPSHOT` on the snapshot of the bytes the daemon
hashed. Whatever the spec, its data files or its model files hold (a FIFO, a sparse terabyte, a
crafted header), the worst a spec can do is fail its own check. The daemon reads back only the
bounded report, as the typed record validate wrote (runner.spec.report), and decides here, in plain
code over it:

- invalid specs stay invalid, with validate's diagnostics;
- code the spec would run (a reward function, a model's `trust_remote_code`) is refused unless the
  daemon was started with the option that allows it, and the diagnostic names that option.

`verdict` is a pure function of the report: total over any JSON value (what does not read as a
report is an invalid spec with the reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from runner.daemon.children import one_line
from runner.spec.report import CodeUse, DiagnosticRecord, Place, Position, ValidationReport

SHOWN_ERRORS = 20


@dataclass(frozen=True)
class Allowances:
    """What the operator lets every spec do beyond the defaults (`runner watch --allow-...`): run code
    it asks for, and read folders outside the watched one (runner.confine)."""

    reward_functions: bool = False
    remote_code: bool = False
    read: tuple[str, ...] = ()
    """Folders any spec may read (besides the watched folder, the hub cache and the run root)."""


REFUSALS = {
    "reward_function": ("reward_functions", "--allow-reward-functions",
                        "runs Python code from the spec's folder as the daemon's user"),
    "remote_code": ("remote_code", "--allow-remote-code", "runs Python code shipped with the model"),
}


@dataclass
class Verdict:
    valid: bool
    name: str | None = None
    depends_on: list[str] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    reason: str = ""
    """One line: why it is invalid (empty when valid)."""
    hint: str | None = None
    priority: int = 0


def verdict(report, failure: str, allow: Allowances) -> Verdict:
    """What the daemon makes of a check: its report (`runner validate --format json` of one spec, as JSON), or
    why there is none. Total: a missing report, or one that is not a validation report of one file, is an
    invalid spec whose reason says so, never an exception."""
    parsed = _parsed(report)
    if isinstance(parsed, str) or len(parsed.files) != 1:
        why = failure or (parsed if isinstance(parsed, str) else "it made no report")
        return Verdict(False, reason=f"the check of this spec failed: {why}")
    record = parsed.files[0]
    if not record.valid:
        errors = [d for d in parsed.diagnostics if d.is_error]
        first = errors[0].where() if errors else "see runner validate"
        return Verdict(False, diagnostics=[d.to_json() for d in errors[:SHOWN_ERRORS]],
                       reason=f"{len(errors)} error(s), the first: {first}", hint=errors[0].hint if errors else None)
    refused = [_refusal(use, record.file) for use in record.runs_code
               if not getattr(allow, REFUSALS.get(use.kind, ("", "", ""))[0], False)]
    if refused:
        first = refused[0]
        return Verdict(False, name=record.name, diagnostics=refused,
                       reason=f"{first['path']}: {first['summary']} ({first['hint']})", hint=first["hint"])
    if record.name is None:
        return Verdict(False, reason="the check of this spec failed: its report names no job")
    return Verdict(True, name=record.name, depends_on=record.depends_on, priority=record.priority)


def _parsed(report) -> ValidationReport | str:
    """The report read as a validation report, or why it is not one (None: there is none)."""
    if report is None:
        return "it made no report"
    try:
        return ValidationReport.model_validate(report)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "the report"
        return one_line(f"its report could not be read ({where}: {problem['msg']})")
    except (ValueError, RecursionError) as error:  # anything else a value may raise: still no report
        return f"its report could not be read ({type(error).__name__})"


def name_taken(name: str, path: str, owner_path: str, owner_id: int, folder: Path) -> Verdict:
    """Two specs with one name in a watched folder: the later one is refused, naming the first."""
    shown = os.path.relpath(owner_path, folder)
    summary = f"the name '{name}' is already used by {shown} (job #{owner_id})"
    hint = "names identify specs in a watched folder: rename one of them"
    return Verdict(False, name=name, diagnostics=[diagnostic(os.path.relpath(path, folder), "name", None, summary,
                                                               hint)],
                   reason=f"{summary}; {hint}", hint=hint)


def _refusal(use: CodeUse, file: str) -> dict:
    _, option, what = REFUSALS.get(use.kind, ("", "--allow-" + use.kind, "runs code"))
    return diagnostic(file, use.path, use.line, f"'{use.what}' {what}; this daemon refuses it",
                      f"start runner watch with {option} to allow it")


def diagnostic(file: str, path: str, line: int | None, summary: str, hint: str) -> dict:
    """A diagnostic as `runner validate --format json` writes it, for what the daemon itself refuses."""
    place = Place(filename=file) if line is None else Place(filename=file, start=Position(line=line, column=1))
    return DiagnosticRecord(severity="error", summary=summary, detail="", hint=hint, path=path, range=place).to_json()
