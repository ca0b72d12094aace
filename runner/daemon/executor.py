"""Where a job's run happens: started, observed, stopped and adopted through one small interface.

The supervisor decides when a job starts and on which devices; an executor makes it happen and
reports how it ends. `Local` runs `runner run --plan` as a child process group on this box; another
executor (Slurm: sbatch instead of a child, its job id in the store, its state from Slurm) is a
second implementation of `Executor`, not a fork of the supervisor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runner.daemon import children
from runner.daemon.store import Job

if TYPE_CHECKING:
    from runner.plan.models import Plan


class Execution(Protocol):
    """One start of a job's run."""

    job_id: int
    started: float
    """time.monotonic() at its start (or adoption)."""
    stop_sent: float | None
    """When the supervisor asked it to stop (a cancellation, the job timeout), if it did."""

    def exit_code(self) -> int | None:
        """None while it runs; its exit status once it ended (-1: ended, status unknown)."""

    def stop(self, cold: bool) -> None:
        """Warm: let it write a checkpoint and stop; cold: end it now."""

    @property
    def process_group(self) -> int | None:
        """Its process group on this box, to attribute GPU memory (None when it runs elsewhere)."""


class Executor(Protocol):
    def start(self, job: Job, plan_path: Path, runs_dir: Path, gpus: list[int], log_path: Path) -> Execution:
        """Start the run of a job's plan on these GPUs (empty: the CPU)."""

    def identity(self, execution: Execution) -> dict:
        """The store fields that find this execution again after a daemon restart."""

    def adopt(self, job: Job, log_path: Path) -> Execution | None:
        """The execution a job's stored identity names, if it still runs."""

    def refusal(self, plan: Plan) -> tuple[str, str] | None:
        """(why, what to do) when this executor can never run the plan; None when it can."""


class Local:
    """Runs as child process groups of the daemon (`runner run --plan ...`)."""

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def start(self, job: Job, plan_path: Path, runs_dir: Path, gpus: list[int], log_path: Path) -> children.Child:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        command = [*self.command, "run", "--plan", str(plan_path), "--runs-dir", str(runs_dir), "--quiet"]
        return children.launch(job.id, command, log_path, env)

    def identity(self, execution: children.Child) -> dict:
        return {"pid": execution.pid, "pid_start": children.process_start_time(execution.pid)}

    def adopt(self, job: Job, log_path: Path) -> children.Child | None:
        if job.pid and children.process_start_time(job.pid) == job.pid_start:
            return children.Child(job.id, job.pid, log_path=log_path)
        return None

    def refusal(self, plan: Plan) -> tuple[str, str] | None:
        if plan.device.nodes > 1:
            return (f"it runs on {plan.device.nodes} nodes; this daemon runs its jobs on this machine only",
                    "run the daemon with --executor slurm, or set hardware.nodes: 1")
        return None
