"""Where a job's run happens: started, observed, stopped and adopted through one small interface, and the
one table of the executors there are.

The supervisor decides when a job starts and on which devices; an executor makes it happen and reports
how it ends. `local` runs `runner run --plan` as a child process group on this box
(runner.daemon.local_executor); `slurm` submits it as a Slurm job (runner.daemon.slurm_executor). Each
start is an execution in the store (runner.daemon.store.Execution) holding the executor's name and its
handle on the run (a pid and its start time; a Slurm job id): a daemon that restarts gives the handle back
to the executor to adopt the run, so a new executor needs no new column.

EXECUTORS is the table, as pre-commit's languages and submitit's executor plugins: a name, what it is for
the help, its own command-line options (`runner watch --executor NAME ...`), and where its implementation
is. A new executor is a module implementing `Executor` and a line here; `runner watch` and the CLI take
their choices and options from the table. This module imports nothing heavy: the CLI reads it to build
`runner watch`'s options.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runner.daemon.resources import Devices
    from runner.daemon.store import Job
    from runner.plan.models import Plan


class Run(Protocol):
    """One start of a job's run, as the supervisor watches it."""

    job_id: int
    started: float
    """time.monotonic() at its start (or adoption; an executor may count from when it really began)."""
    stop_sent: float | None
    """When the supervisor asked it to stop (a cancellation, the job timeout), if it did."""
    log_path: Path | None
    """The daemon's log of the job, where the run's output goes (its last words explain a failure)."""

    def exit_code(self) -> int | None:
        """None while it runs; its exit status once it ended (-1: ended, status unknown)."""

    def stop(self, cold: bool) -> None:
        """Warm: let it write a checkpoint and stop; cold: end it now."""

    @property
    def detail(self) -> str | None:
        """Where it is, when the executor knows more than "running" (a Slurm job's queue): the job's reason."""

    @property
    def process_group(self) -> int | None:
        """Its process group on this box, to attribute GPU memory (None when it runs elsewhere)."""


class Executor(Protocol):
    name: str
    """Its name in the table (EXECUTORS), recorded with each execution it starts."""

    @classmethod
    def configured(cls, options: Mapping[str, object], command: list[str]) -> Executor:
        """The executor for `runner watch`'s options (its own, by `Option.dest`) and the command that runs
        runner (`runner run --plan`); a RunnerError when they are wrong."""

    def devices(self) -> Devices:
        """What the daemon schedules jobs onto: this box's GPUs, or none to hold (Slurm allocates them)."""

    def start(self, job: Job, plan_path: Path, runs_dir: Path, gpus: list[int], log_path: Path) -> Run:
        """Start the run of a job's plan on these GPUs (empty: the CPU)."""

    def handle(self, run: Run) -> dict:
        """What finds this run again after a daemon restart (JSON): the execution's handle."""

    def adopt(self, job: Job, handle: dict, log_path: Path) -> Run | None:
        """The run a handle of this executor names, if it still runs (or, for Slurm, is still known)."""

    def refusal(self, plan: Plan) -> tuple[str, str] | None:
        """(why, what to do) when this executor can never run the plan; None when it can."""


@dataclass(frozen=True)
class Option:
    """A command-line option of an executor: `runner watch --executor NAME FLAG VALUE`."""

    flag: str
    dest: str
    """Its key in the options the executor is configured with."""
    help: str
    metavar: str | None = None


@dataclass(frozen=True)
class ExecutorKind:
    name: str
    help: str
    implementation: str
    """`module:Class` of its Executor, imported only when a daemon uses it."""
    title: str = ""
    """The heading of its options in `runner watch --help`."""
    options: tuple[Option, ...] = ()

    def configured(self, options: Mapping[str, object], command: list[str]) -> Executor:
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name).configured(options, command)


SLURM_OPTIONS = (
    Option("--partition", "partition", "sbatch --partition (default: the config file's, else Slurm's)"),
    Option("--account", "account", "sbatch --account"),
    Option("--time", "time_limit", "time limit: minutes, HH:MM:SS or D-HH:MM:SS; runner checkpoints before it",
           "LIMIT"),
    Option("--slurm-config", "config_file", "Slurm settings (default: $RUNNER_SLURM_CONFIG or "
                                            "~/.config/runner/slurm.yaml)", "FILE"),
)
"""`runner watch --executor slurm`'s options; `runner submit` takes the same (its file option is --config)."""

EXECUTORS = {kind.name: kind for kind in (
    ExecutorKind("local", "children of the daemon on this box (default)",
                 "runner.daemon.local_executor:Local"),
    ExecutorKind("slurm", "Slurm jobs (submitted with sbatch; the state and runs dirs must be on storage the nodes "
                          "see)", "runner.daemon.slurm_executor:Slurm", "Slurm", SLURM_OPTIONS),
)}
