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
from typing import TYPE_CHECKING

from runner.daemon.states import State
from runner.failures import Failure
from runner.manifest import Manifest
from runner.rundir import RunDirectory, plan_sha256, read_plan, runs_folder, runs_of

if TYPE_CHECKING:
    from runner.daemon.store import Job
    from runner.plan.models import Plan

MAX_DEPTH = 16
"""Folders below the run root searched for run directories (outputs.dir may nest a few levels)."""
STATE_FOLDERS = {"snapshots", "plans", "logs", "checks"}
"""The daemon's own folders in the state dir, which is the default run root: never run directories."""
FINISHED = ("succeeded", "failed")


@dataclass(frozen=True)
class Outcome:
    state: State
    failure: str | None
    """The kind its manifest recorded, as it recorded it (runner.failures)."""
    reason: str


def outcome(manifest: Manifest) -> Outcome | None:
    """The terminal state a finished manifest records; None while the run can still go on."""
    if manifest.state == "succeeded":
        return Outcome(State.SUCCEEDED, None, "succeeded")
    if manifest.state == "failed":
        if manifest.error is None:  # a run records why it failed; one that did not ended with an error
            return Outcome(State.FAILED, Failure.RUNTIME.value, "failed")
        return Outcome(State.FAILED, Failure(manifest.error.kind).value, manifest.error.message)
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


class JobRuns:
    """The run directory of each job: the newest run of its plan hash and its spec content (two jobs never
    share a run, even where their plans would hash alike). Where its plan's runs are is read from its plan
    file once."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._where: dict[int, tuple[Path, str]] = {}
        """job id -> (runs folder, plan hash)"""

    def planned(self, job_id: int, plan: Plan) -> None:
        self._where[job_id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))

    def of(self, job: Job) -> RunDirectory | None:
        if job.id not in self._where:
            if not job.plan_path or not Path(job.plan_path).is_file():
                return None
            self.planned(job.id, read_plan(Path(job.plan_path)))
        runs = [run for run, manifest in runs_of(*self._where[job.id]) if manifest.spec_sha256 == job.sha256]
        return runs[-1] if runs else None
