"""`runner runs [SPEC|NAME]`: the runs under a run root, with state, steps, final loss, when and size."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from runner.box import run_root, where_set
from runner.errors import ExitCode
from runner.runs import RunRecord, runs_under, spec_runs_folder
from runner.terminal import printable


def runs(target: str | None, runs_dir: str | None, output_format: str) -> int:
    root = run_root(runs_dir)
    if target is not None and Path(target).is_file():
        name, folder = spec_runs_folder(Path(target), root)
        found = runs_under(folder, name)
    elif target is not None and Path(target).is_dir():
        found = runs_under(Path(target))
    else:
        found = runs_under(root, target)
    if output_format == "json":
        print(json.dumps({"run_root": str(root), "runs": [_json(run) for run in found]}, indent=2))
        return ExitCode.OK
    if not found:
        print(f"no runs{f' of {target!r}' if target else ''} under {root} (the run root is set by {where_set()})")
        return ExitCode.OK
    print(printable(render(found, root)))
    return ExitCode.OK


def _json(run: RunRecord) -> dict:
    return {"name": run.name, "run_id": run.run_id, "method": run.method, "state": run.state, "steps": run.steps,
            "final_loss": run.final_loss, "started_at": run.started_at, "finished_at": run.finished_at,
            "size_bytes": run.size(), "path": str(run.path), "error": run.error, "evals": run.evals}


def render(found: list[RunRecord], root: Path) -> str:
    header = ("name", "run id", "state", "steps", "loss", "evals", "when", "size", "folder")
    rows = [header] + [(run.name, run.run_id, run.state, str(run.steps),
                        f"{run.final_loss:.4f}" if run.final_loss is not None else "-", _evals(run), _when(run.when),
                        human_bytes(run.size()), _relative(run.path, root)) for run in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    right = {3, 4, 7}  # numbers line up on the right
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in
                 enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]))
    return "\n".join(lines)


def _evals(run: RunRecord) -> str:
    """The gates' verdict, else the first score base -> result; - without evals."""
    if run.evals is None:
        return "-"
    from pydantic import ValidationError

    from runner.evals.render import headline
    from runner.manifest import EvalsRecord

    try:
        return headline(EvalsRecord.model_validate(run.evals))
    except ValidationError:
        return "?"


def _when(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp or "-"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def human_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
