"""The run directories as the record of what the daemon ran: the store can always be rebuilt.

Every job the daemon starts leaves `<run root>/<outputs.dir>/<name>/<run-id>/manifest.json`, and
the plan inside it names the snapshot it was planned from (`<state dir>/snapshots/<sha256>.yaml`,
the spec content that is the job's identity) and the spec it stands for. A manifest that says
`succeeded` or `failed` is the outcome of that job whatever the store says: a store that was lost,
emptied or never told (the daemon died while its child finished) is brought back in line with it,
so a finished job is never run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from runner.daemon.states import Failure, State
from runner.manifest import Manifest
from runner.rundir import RunDirectory

MAX_DEPTH = 16
"""Folders below the run root searched for run directories (outputs.dir may nest a few levels)."""
STATE_FOLDERS = {"snapshots", "plans", "logs", "checks"}
"""The daemon's own folders in the state dir, which is the default run root: never run directories."""
FINISHED = ("succeeded", "failed")


@dataclass(frozen=True)
class Outcome:
    state: State
    failure: str | None
    reason: str


def outcome(manifest: Manifest) -> Outcome | None:
    """The terminal state a finished manifest records; None while the run can still go on."""
    if manifest.state == "succeeded":
        return Outcome(State.SUCCEEDED, None, "succeeded")
    if manifest.state == "failed":
        kind = manifest.error.kind if manifest.error else "runtime"
        failure = {"oom": Failure.OOM, "plan": Failure.PLAN, "stale": Failure.PLAN,
                   "diverged": Failure.DIVERGED, "gate": Failure.GATE}.get(kind, Failure.RUNTIME)
        return Outcome(State.FAILED, failure.value, manifest.error.message if manifest.error else "failed")
    return None


def reflects_attempt(manifest: Manifest, pid: int | None, started_at: float | None) -> bool:
    """Whether a manifest's last attempt is the one the daemon started (same process, or started
    since), and not an earlier attempt of the same plan (a retried job resumes its old run)."""
    if not manifest.attempts:
        return False
    last = manifest.attempts[-1]
    if pid is not None and last.pid == pid:
        return True
    try:
        return started_at is not None and datetime.fromisoformat(last.started_at).timestamp() >= started_at - 1
    except (TypeError, ValueError):
        return False


def daemon_runs(runs_dir: Path, state_dir: Path) -> Iterator[tuple[RunDirectory, Manifest]]:
    """Run directories below `runs_dir` whose plan was made from one of the daemon's snapshots,
    oldest first within each runs folder (run ids start with their start time)."""
    runs_dir, snapshots = runs_dir.resolve(), (state_dir / "snapshots").resolve()
    own = {(state_dir / name).resolve() for name in STATE_FOLDERS}
    for root, folders, files in os.walk(runs_dir):
        here = Path(root)
        depth = len(here.relative_to(runs_dir).parts)
        if "manifest.json" in files:
            folders[:] = []
            run = RunDirectory(here)
            manifest = run.read_manifest()
            if manifest is not None and Path(manifest.spec_path).parent == snapshots:
                yield run, manifest
            continue
        folders[:] = sorted(name for name in folders if depth < MAX_DEPTH and not name.startswith(".")
                            and here / name not in own)
