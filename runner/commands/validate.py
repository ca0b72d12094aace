"""`runner validate PATH...`: check specs without torch, every problem at once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from runner.errors import ExitCode, UsageError
from runner.fsutil import MAX_FOLDER_DEPTH, walk
from runner.readers import open_regular
from runner.spec.check import SpecResult, check_spec, display_path
from runner.spec.jobs import SPEC_SUFFIXES, looks_like_spec
from runner.spec.lockfile import LOCK_NAME
from runner.spec.yamlpos import load_yaml
from runner.terminal import printable

_SKIPPED_FOLDERS = {"runs", "node_modules", "__pycache__", "site-packages"}


def validate(paths: list[str], output_format: str = "text", source: str | None = None) -> int:
    """`source`: the spec file that the one spec given is a copy of (the daemon checks its snapshots)."""
    if source is not None and len(paths) != 1:
        raise UsageError("--source names the spec that one copy stands for; give exactly one file")
    data_files = [Path(given) for given in paths if _is_data_file(Path(given))]
    # a lockfile stands for the specs beside it
    named = [str(Path(given).parent) if Path(given).name == LOCK_NAME and Path(given).is_file() else given
             for given in paths if not _is_data_file(Path(given))]
    specs = find_specs(named) if named else []
    users = specs_using(data_files)
    seen = {spec.resolve() for spec in specs}
    for spec in (spec for using in users.values() for spec in using):
        if spec.resolve() not in seen:
            seen.add(spec.resolve())
            specs.append(spec)
    results = [check_spec(path, source=Path(source) if source else None) for path in specs]
    if output_format == "json":
        from runner.spec.report import DataFileUse, ValidationReport  # its models are built only for JSON

        used = [DataFileUse(file=display_path(data), specs=[display_path(spec) for spec in using])
                for data, using in users.items()]
        print(json.dumps(ValidationReport.of(results, used).to_json(), indent=2))
    else:
        for data, using in users.items():
            print(f"{display_path(data)}: " + (f"checked through {', '.join(map(display_path, using))}" if using
                                               else f"no spec under {display_path(search_root(data)[0])} uses it"))
        if results or not users:
            print(text_report(results))
    return ExitCode.INVALID if any(result.errors for result in results) else ExitCode.OK


def _is_data_file(path: Path) -> bool:
    return path.is_file() and path.suffix not in SPEC_SUFFIXES and path.name != LOCK_NAME


OUTSIDE_REPOSITORY_DEPTH = 3
"""Outside a git repository, folders searched below the search root for specs that use a data file."""


def search_root(data_file: Path) -> tuple[Path, int]:
    """Where the specs that may use a data file are looked for, and how deep: its git repository (the
    nearest folder above it with .git), all of it; without one, the folder above the file's own
    (specs/x.yaml with specs/data/), a few levels down, and never the whole filesystem (a file in /tmp
    searched from /)."""
    folder = data_file.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate, MAX_FOLDER_DEPTH
    above = folder.parent
    return (folder if above == Path(above.anchor) else above), OUTSIDE_REPOSITORY_DEPTH


def specs_using(data_files: list[Path]) -> dict[Path, list[Path]]:
    """For each data file, the specs under its search root whose data section names it, or a folder
    holding it (a save_to_disk folder, a folder of parquet files)."""
    named_by: dict[Path, list[tuple[Path, set[Path]]]] = {}  # search root -> (spec, the paths it names)
    users = {}
    for data_file in data_files:
        root, depth = search_root(data_file)
        if root not in named_by:
            named_by[root] = [(spec, _data_named_by(spec)) for spec in _specs_under(root, depth)]
        resolved = data_file.resolve()
        within = {resolved, *resolved.parents}
        users[data_file] = [spec for spec, named in named_by[root] if named & within]
    return users


def _data_named_by(spec: Path) -> set[Path]:
    document, _ = load_yaml(spec)
    data = document.data.get("data") if document is not None and isinstance(document.data, dict) else None
    if not isinstance(data, dict):
        return set()
    return {(spec.parent / named).resolve() for role in ("train", "eval") for named in _paths(data.get(role))}


def _paths(value) -> list[str]:
    """The paths a data.train or data.eval entry names, as written (it may not be valid yet): a string,
    a source's `path`, or a list of those."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return [value["path"]]
    if isinstance(value, list):
        return [path for item in value for path in _paths(item)]
    return []


def find_specs(paths: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for YAML files that look like specs. A spec named twice
    (a file and the folder holding it, `./job.yaml` and `job.yaml`) is checked, and counted, once."""
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
    once = {}
    for path in found:
        once.setdefault(path.resolve(), path)
    return list(once.values())


def _specs_under(folder: Path, depth: int = MAX_FOLDER_DEPTH) -> list[Path]:
    specs = []
    for root, files in walk(folder, lambda name: not name.startswith(".") and name not in _SKIPPED_FOLDERS, depth):
        for name in files:
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
            text = printable(diagnostic.format_text())  # file names and quoted cells may hold escapes
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
