"""`runner validate PATH...`: check specs without torch, every problem at once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from runner.errors import ExitCode, UsageError
from runner.readers import open_regular
from runner.spec.check import SpecResult, check_spec, display_path
from runner.spec.jobs import SPEC_SUFFIXES, jobs_named, looks_like_spec

_SKIPPED_FOLDERS = {"runs", "node_modules", "__pycache__", "site-packages"}


def validate(paths: list[str], output_format: str = "text", source: str | None = None) -> int:
    if source is not None and len(paths) != 1:
        raise UsageError("--source names the spec that one copy stands for; give exactly one file")
    results = [check_spec(path, source=Path(source) if source else None) for path in find_specs(paths)]
    if output_format == "json":
        print(json.dumps(json_report(results), indent=2))
    else:
        print(text_report(results))
    return ExitCode.INVALID if any(result.errors for result in results) else ExitCode.OK


def find_specs(paths: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for YAML files that look like specs."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_specs_under(path))
        elif path.exists():
            raise UsageError(f"{given}: not a regular file or folder")
        else:
            raise UsageError(f"{given}: no such file or folder")
    if not found:
        raise UsageError(f"no spec files under {', '.join(paths)}",
                         hint="specs are .yaml or .yml files with version: and method: keys")
    return found


def _specs_under(folder: Path) -> list[Path]:
    specs = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in _SKIPPED_FOLDERS)
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix in SPEC_SUFFIXES and looks_like_spec(_head(path)):
                specs.append(path)
    return specs


def _head(path: Path) -> str:
    try:
        with open_regular(path) as handle:  # a FIFO named like a spec would block a plain open
            return handle.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""


def text_report(results: list[SpecResult]) -> str:
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    lines = []
    for result in results:
        for diagnostic in result.diagnostics:
            text = diagnostic.format_text()
            if colour:
                code = "31" if diagnostic.is_error else "33"
                text = text.replace(f": {diagnostic.severity}:", f": \033[1;{code}m{diagnostic.severity}\033[0m:", 1)
            lines.append(text)
    errors = sum(len(result.errors) for result in results)
    warnings = sum(len(result.warnings) for result in results)
    invalid = sum(1 for result in results if result.errors)
    noun = "spec" if len(results) == 1 else "specs"
    summary = f"{len(results)} {noun} checked: {len(results) - invalid} valid, {invalid} invalid"
    if errors or warnings:
        summary += f" ({errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)})"
    return "\n".join(lines + [summary])


def json_report(results: list[SpecResult]) -> dict:
    """Shaped like `terraform validate -json`, with a record per file."""
    diagnostics = [d for result in results for d in result.diagnostics]
    return {
        "format_version": "1.0",
        "valid": not any(d.is_error for d in diagnostics),
        "error_count": sum(d.is_error for d in diagnostics),
        "warning_count": sum(not d.is_error for d in diagnostics),
        "diagnostics": [d.to_json() for d in diagnostics],
        "files": [_file_record(result) for result in results],
    }


def _file_record(result: SpecResult) -> dict:
    record = {"file": display_path(result.source or result.path), "valid": not result.errors}
    if result.spec is not None:
        record.update(name=result.spec.name, method=result.spec.method, depends_on=jobs_named(result.spec),
                      runs_code=[use.to_json() for use in result.runs_code])
    record["data"] = {key: {"rows": report.rows, "usable_rows": report.usable, "format": report.format,
                            "variant": report.variant} for key, report in result.data.items()}
    return record
