"""Admission: is a spec the daemon found a job it may run?

Everything a spec controls is read outside the daemon's process. The check is `runner validate
--format json --source SPEC SNAPSHOT` in a child process, with a time limit and an address-space
limit: whatever the spec, its data files or its model files hold (a FIFO, a sparse terabyte, a
crafted header), the worst a spec can do is fail its own check. The daemon reads back only the
child's bounded JSON report, and decides here, in plain code over that report:

- invalid specs stay invalid, with validate's diagnostics;
- code the spec would run (a reward function, a model's `trust_remote_code`) is refused unless the
  daemon was started with the option that allows it, and the diagnostic names that option.

`verdict` is a pure function of the report, so a longer-lived checking process (a planning worker
that imports once) can make the same report in-process (`commands.validate.json_report` of
`check_spec(snapshot, source=spec)`) and hand it to the same function.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.readers import MAX_JSON_DEPTH, loads_bounded, read_regular

CHECK_TIMEOUT_SECONDS = 300.0
"""Reading large data files takes time (about a second per 100 MB of JSONL); a hung read does not end."""
CHECK_MEMORY_BYTES = 2 * 2**30
"""Address space of the check (RLIMIT_AS): validate streams its inputs in bounded memory, well under it."""
MAX_REPORT_BYTES = 8 * 2**20
SHOWN_ERRORS = 20


@dataclass(frozen=True)
class Allowances:
    """Code the daemon may run for a spec that asks for it (`runner watch --allow-...`)."""

    reward_functions: bool = False
    remote_code: bool = False


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


def command(snapshot: Path, source: Path, report: Path) -> list[str]:
    """The check as a command line: a shell sets the address-space limit, then becomes the check
    (exec: same pid, same process group), whose JSON report goes to `report`."""
    check = [sys.executable, "-m", "runner", "validate", "--format", "json", "--source", str(source), str(snapshot)]
    limit_kib = str(CHECK_MEMORY_BYTES // 1024)
    return ["/bin/sh", "-c", 'ulimit -v "$1" && shift && exec "$@" > "$0"', str(report), limit_kib, *check]


def read_report(path: Path) -> dict | None:
    """The JSON report a check child wrote, or None when it wrote nothing readable."""
    try:
        report = loads_bounded(read_regular(path, MAX_REPORT_BYTES), MAX_JSON_DEPTH)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def verdict(exit_code: int, report: dict | None, log_tail: str, allow: Allowances) -> Verdict:
    """What the daemon makes of a finished check: its exit code, its report (`runner validate
    --format json` of one spec), its last words. Total: a missing or malformed report is an invalid
    spec with the check's last words as the reason, never an exception."""
    try:
        files = report["files"]
        record = files[0] if isinstance(files, list) and len(files) == 1 and isinstance(files[0], dict) else None
        diagnostics = [d for d in report["diagnostics"] if isinstance(d, dict)]
    except (KeyError, TypeError):
        record, diagnostics = None, []
    if record is None or exit_code not in (0, 1):
        why = log_tail or f"it exited with code {exit_code}"
        return Verdict(False, reason=f"the check of this spec failed: {why}")
    if not record.get("valid"):
        errors = [d for d in diagnostics if d.get("severity") == "error"]
        first = _where(errors[0]) if errors else "see runner validate"
        return Verdict(False, diagnostics=errors[:SHOWN_ERRORS], reason=f"{len(errors)} error(s), the first: {first}")
    name = record.get("name") if isinstance(record.get("name"), str) else None
    refused = [_refusal(use, str(record.get("file", ""))) for use in _list(record.get("runs_code"))
               if isinstance(use, dict) and not getattr(allow, REFUSALS.get(str(use.get("kind")), ("", ""))[0], False)]
    if refused:
        first = refused[0]
        return Verdict(False, name=name, diagnostics=refused,
                       reason=f"{first['path']}: {first['summary']} ({first['hint']})")
    if name is None:
        return Verdict(False, reason="the check of this spec failed: its report names no job")
    return Verdict(True, name=name, depends_on=[job for job in _list(record.get("depends_on")) if isinstance(job, str)])


def name_taken(name: str, path: str, owner_path: str, owner_id: int, folder: Path) -> Verdict:
    """Two specs with one name in a watched folder: the later one is refused, naming the first."""
    shown = os.path.relpath(owner_path, folder)
    summary = f"the name '{name}' is already used by {shown} (job #{owner_id})"
    hint = "names identify specs in a watched folder: rename one of them"
    return Verdict(False, name=name, diagnostics=[diagnostic(os.path.relpath(path, folder), "name", None, summary,
                                                               hint)],
                   reason=f"{summary}; {hint}")


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
