"""Finding runs under a run root: by run folder, by spec file, or by spec name.

Torch-free, and tolerant: a manifest that cannot be read is skipped, never fatal. `runner runs`,
`runner sample`, `runner logs` and `{job: NAME}` references all find runs here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runner.box import where_set
from runner.errors import RunnerError
from runner.readers import loads_bounded, read_regular

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_NOT_RUN_ROOTS = {"node_modules", "__pycache__", "site-packages"}
_MAX_DEPTH = 6
"""<run root>/<outputs.dir>/<name>/<run-id>: outputs.dir may be nested, but not deeply."""


@dataclass(frozen=True)
class RunRecord:
    """What a run's manifest says about it, read without validating the whole manifest."""

    path: Path
    name: str
    run_id: str
    method: str
    state: str
    steps: int
    final_loss: float | None
    started_at: str
    finished_at: str | None
    error: str | None
    spec_source: str | None
    """The spec file the run was made from (the original of a daemon's snapshot)."""
    spec_sha256: str | None
    evals: dict | None = None
    """The manifest's evals record, as written (base and result side by side, the gates)."""

    @classmethod
    def read(cls, folder: Path) -> RunRecord | None:
        try:
            record = loads_bounded(read_regular(folder / MANIFEST, MAX_MANIFEST_BYTES))
            metrics = record.get("metrics") or {}
            error = record.get("error") or {}
            inputs = (record.get("plan") or {}).get("inputs") or {}
            return cls(folder, str(record["name"]), str(record["run_id"]), str(record.get("method", "")),
                       str(record["state"]), int(metrics.get("steps") or 0), metrics.get("train_loss"),
                       str((record.get("timings") or {}).get("started_at", "")), record.get("finished_at"),
                       error.get("message"), inputs.get("spec_source") or inputs.get("spec_path"),
                       inputs.get("spec_sha256"), record.get("evals") if isinstance(record.get("evals"), dict) else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def made_from(self, spec_path: str, spec_sha256: str) -> bool:
        """Whether the run was made from this spec file, or from exactly its bytes (another spec with the
        same name in another folder writes to the same runs folder, and is not this one)."""
        return self.spec_source == spec_path or self.spec_sha256 == spec_sha256

    @property
    def when(self) -> str:
        """When it finished, or started if it has not: ISO 8601, UTC."""
        return self.finished_at or self.started_at

    def size(self) -> int:
        """Bytes on disk under the run folder."""
        total = 0
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
        return total


def runs_under(folder: Path, name: str | None = None) -> list[RunRecord]:
    """Every run below `folder` (a run root, or a folder of one spec's runs), oldest first.

    Hidden folders (.git, .venv) and package folders are skipped; a run's own subfolders
    (checkpoints, model) are not searched."""
    found = []
    base_depth = len(folder.parts)
    for root, folders, files in os.walk(folder):
        here = Path(root)
        if MANIFEST in files:
            record = RunRecord.read(here)
            if record is not None:
                folders[:] = []
                if name is None or record.name == name:
                    found.append(record)
                continue
        deep = len(here.parts) - base_depth >= _MAX_DEPTH
        folders[:] = [] if deep else sorted(f for f in folders if not f.startswith(".") and f not in _NOT_RUN_ROOTS)
    return sorted(found, key=lambda run: (run.name, run.started_at, run.run_id))


def latest(runs: list[RunRecord], *, succeeded: bool) -> RunRecord | None:
    """The newest run (by start), or the newest succeeded one (by finish)."""
    if succeeded:
        done = [run for run in runs if run.state == "succeeded"]
        return max(done, key=lambda run: (run.finished_at or "", run.run_id), default=None)
    return max(runs, key=lambda run: (run.started_at, run.run_id), default=None)


def spec_runs_folder(spec_path: Path, run_root: Path) -> tuple[str, Path]:
    """A spec file's name, and the folder its runs go to under `run_root`."""
    from runner.spec.check import check_spec

    checked = check_spec(spec_path, check_inputs=False)
    if checked.spec is None:
        raise RunnerError(f"{spec_path} is not a valid spec", f"see: runner validate {spec_path}")
    return checked.spec.name, run_root / checked.spec.outputs.dir / checked.spec.name


def find_run(target: str, run_root: Path, *, succeeded: bool) -> RunRecord:
    """The run that `target` names: a run folder; a folder of runs, a spec file or a spec name, whose
    newest (succeeded, when asked) run is taken."""
    path = Path(target)
    if path.is_dir() and (path / MANIFEST).is_file():
        record = RunRecord.read(path)
        if record is None:
            raise RunnerError(f"{target}: the run's manifest.json cannot be read")
        return record
    if path.is_file():
        name, folder = spec_runs_folder(path, run_root)
        runs, where = runs_under(folder, name), folder
    elif path.is_dir():
        runs, name, where = runs_under(path), target, path
    else:
        runs, name, where = runs_under(run_root, target), target, run_root
    chosen = latest(runs, succeeded=succeeded)
    if chosen is not None:
        return chosen
    if not runs:
        raise RunnerError(f"no runs of '{name}' under {where}",
                          f"give a run folder, a spec file or a spec name; the run root is set by {where_set()}; "
                          "`runner runs` lists the runs")
    newest = latest(runs, succeeded=False)
    raise RunnerError(f"'{name}' has no succeeded run yet: its latest, {newest.run_id}, is {newest.state}",
                      f"see: runner logs {newest.path}")
