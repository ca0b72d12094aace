"""Admission: is a spec the daemon found a job it may run?

Everything a spec controls is read outside the daemon's process: the planning worker
(runner.daemon.worker, a child with a memory limit and a deadline per request) makes the report of
`runner validate --format json --source SPEC SNAPSHOT` on the snapshot of the bytes the daemon
hashed. Whatever the spec, its data files or its model files hold (a FIFO, a sparse terabyte, a
crafted header), the worst a spec can do is fail its own check. The daemon reads back only the
bounded report, and decides here, in plain code over that report:

- invalid specs stay invalid, with validate's diagnostics;
- code the spec would run (a reward function, a model's `trust_remote_code`) is refused unless the
  daemon was started with the option that allows it, and the diagnostic names that option.

`verdict` is a pure function of the report: total over any JSON value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SHOWN_ERRORS = 20
MAX_PRIORITY = 100


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
    """What the daemon makes of a check: its report (`runner validate --format json` of one spec), or
    why there is none. Total: a missing or malformed report is an invalid spec whose reason is the
    failure, never an exception."""
    try:
        files = report["files"]
        record = files[0] if isinstance(files, list) and len(files) == 1 and isinstance(files[0], dict) else None
        diagnostics = [d for d in report["diagnostics"] if isinstance(d, dict)]
    except (KeyError, TypeError, IndexError):
        record, diagnostics = None, []
    if record is None:
        return Verdict(False, reason=f"the check of this spec failed: {failure or 'it made no report'}")
    if not record.get("valid"):
        errors = [d for d in diagnostics if d.get("severity") == "error"]
        first = _where(errors[0]) if errors else "see runner validate"
        hint = errors[0].get("hint") if errors and isinstance(errors[0].get("hint"), str) else None
        return Verdict(False, diagnostics=errors[:SHOWN_ERRORS], reason=f"{len(errors)} error(s), the first: {first}",
                       hint=hint)
    name = record.get("name") if isinstance(record.get("name"), str) else None
    refused = [_refusal(use, str(record.get("file", ""))) for use in _list(record.get("runs_code"))
               if isinstance(use, dict) and not getattr(allow, REFUSALS.get(str(use.get("kind")), ("", ""))[0], False)]
    if refused:
        first = refused[0]
        return Verdict(False, name=name, diagnostics=refused,
                       reason=f"{first['path']}: {first['summary']} ({first['hint']})", hint=first["hint"])
    if name is None:
        return Verdict(False, reason="the check of this spec failed: its report names no job")
    priority = record.get("priority")
    return Verdict(True, name=name, depends_on=[job for job in _list(record.get("depends_on")) if isinstance(job, str)],
                   priority=priority if type(priority) is int and abs(priority) <= MAX_PRIORITY else 0)


def name_taken(name: str, path: str, owner_path: str, owner_id: int, folder: Path) -> Verdict:
    """Two specs with one name in a watched folder: the later one is refused, naming the first."""
    shown = os.path.relpath(owner_path, folder)
    summary = f"the name '{name}' is already used by {shown} (job #{owner_id})"
    hint = "names identify specs in a watched folder: rename one of them"
    return Verdict(False, name=name, diagnostics=[diagnostic(os.path.relpath(path, folder), "name", None, summary,
                                                               hint)],
                   reason=f"{summary}; {hint}", hint=hint)


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _refusal(use: dict, file: str) -> dict:
    kind = str(use.get("kind"))
    _, option, what = REFUSALS.get(kind, ("", "--allow-" + kind, "runs code"))
    summary = f"'{use.get('what')}' {what}; this daemon refuses it"
    return diagnostic(file, str(use.get("path") or ""), use.get("line"), summary,
                       f"start runner watch with {option} to allow it")


def diagnostic(file: str, path: str, line: int | None, summary: str, hint: str) -> dict:
    """A diagnostic as `runner validate --format json` writes it, for what the daemon itself refuses."""
    place = {"start": {"line": line, "column": 1}} if isinstance(line, int) else {}
    return {"severity": "error", "summary": summary, "detail": "", "hint": hint, "path": path,
            "range": {"filename": file, **place}}


def _where(diagnostic: dict) -> str:
    place = diagnostic.get("range") if isinstance(diagnostic.get("range"), dict) else {}
    start = place.get("start") if isinstance(place.get("start"), dict) else {}
    line = f":{start['line']}" if "line" in start else ""
    field_path = f" {diagnostic['path']}:" if diagnostic.get("path") else ""
    return f"{place.get('filename', '')}{line}:{field_path} {diagnostic.get('summary', '')}"
