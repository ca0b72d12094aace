"""`runner watch DIR` (`--executor local`, the default): the daemon's jobs run as its children on this box.

A job's start is `runner run --plan` in a process group of its own (runner.daemon.children), on the GPUs
the daemon chose (CUDA_VISIBLE_DEVICES); its handle is its pid and the kernel's start time of that pid, so
a daemon that restarts adopts the child that still runs, and never a process that reused the pid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runner.daemon import children
from runner.daemon.resources import Devices

if TYPE_CHECKING:
    from runner.daemon.store import Job
    from runner.plan.models import Plan


class Local:
    """Runs as child process groups of the daemon (`runner run --plan ...`); an Executor of
    runner.daemon.executor."""

    name = "local"

    def __init__(self, command: list[str]) -> None:
        self.command = command

    @classmethod
    def configured(cls, options: Mapping[str, object], command: list[str]) -> Local:
        return cls(command)

    def devices(self) -> Devices:
        return Devices.detect()

    def start(self, job: Job, plan_path: Path, runs_dir: Path, gpus: list[int], log_path: Path) -> children.Child:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        command = [*self.command, "run", "--plan", str(plan_path), "--runs-dir", str(runs_dir), "--quiet"]
        return children.launch(job.id, command, log_path, env)

    def handle(self, run: children.Child) -> dict:
        return {"pid": run.pid, "pid_start": children.process_start_time(run.pid)}

    def adopt(self, job: Job, handle: dict, log_path: Path) -> children.Child | None:
        pid = handle.get("pid")
        if isinstance(pid, int) and pid > 0 and children.process_start_time(pid) == handle.get("pid_start"):
            return children.Child(job.id, pid, log_path=log_path)
        return None

    def refusal(self, plan: Plan) -> tuple[str, str] | None:
        if plan.device.nodes > 1:
            return (f"it runs on {plan.device.nodes} nodes; this daemon runs its jobs on this machine only",
                    "run the daemon with --executor slurm, or set hardware.nodes: 1")
        return None
