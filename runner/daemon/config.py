"""The daemon's configuration: one frozen record, built once from `runner watch`'s arguments
(runner.commands.watch) and read by every part of the loop (runner.daemon.supervisor)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from runner import hubcache
from runner.confine import Confinement
from runner.daemon import children
from runner.daemon.admission import Allowances
from runner.daemon.executor import Executor
from runner.daemon.worker import STALL_SECONDS
from runner.spec import modelinfo

PLAN_TIMEOUT_SECONDS = 300.0
"""At most, for a plan that keeps working: a plan takes seconds (a model on the meta device, up to 20,000
rows tokenized); a stall (no CPU for worker.STALL_SECONDS) ends it far sooner."""


@dataclass(frozen=True)
class DaemonConfig:
    folder: Path
    """The watched folder, resolved."""
    state_dir: Path
    runs_dir: Path
    """The run root of the jobs."""
    executor: Executor
    """Where jobs run (runner.daemon.executor.EXECUTORS), configured with its options."""
    command: tuple[str, ...] = field(default_factory=lambda: tuple(children.runner_command()))
    """How the daemon starts runner (its workers; the local executor's runs)."""
    settle: float = 0.5
    """Seconds a spec file must stay unchanged before it is read."""
    invalid_grace: float = 5.0
    """Seconds an invalid spec may still change (written in parts) before it is recorded invalid."""
    rescan: float = 30.0
    poll: bool = False
    """Poll the folder instead of inotify (network filesystems)."""
    max_attempts: int = 3
    """Starts of one job at most, before a run that keeps vanishing is given up on."""
    job_timeout: float | None = None
    plan_timeout: float = PLAN_TIMEOUT_SECONDS
    stall: float = STALL_SECONDS
    """Seconds a worker may use no CPU while it answers before its request is tried again later."""
    max_jobs: int | None = None
    allow: Allowances = Allowances()
    http: str | None = None
    """The status page's address, as bound (None: not served)."""

    @cached_property
    def granted(self) -> tuple[str, ...]:
        """Where every spec may read: the hub cache and the installed offline copies of hub models, the run
        root ({job: NAME} models), the snapshots of specs, and the folders the operator listed
        (runner watch --allow-read)."""
        offline_copies = [copy.parent for copy in map(modelinfo.offline_copy, modelinfo.OFFLINE_COPIES) if copy]
        return tuple(dict.fromkeys(os.path.realpath(root) for root in (
            hubcache.cache_root(), self.runs_dir, self.snapshots, *offline_copies, *self.allow.read)))

    def confinement(self, author: int | None) -> str:
        """What a spec of this author may read (runner.confine), as the workers take it: its folder, as its
        author, and what the operator granted every spec."""
        return json.dumps(Confinement(str(self.folder), author, self.granted).to_json())

    @property
    def snapshots(self) -> Path:
        """The bytes of each spec content that was found, by its sha256: what is checked, planned and run."""
        return self.state_dir / "snapshots"

    def snapshot_path(self, sha256: str) -> Path:
        return self.snapshots / f"{sha256}.yaml"

    def log_path(self, job_id: int) -> Path:
        """A job's log: its check's and plan's output, then its run's (what `runner logs` shows)."""
        return self.state_dir / "logs" / f"{job_id}.log"
