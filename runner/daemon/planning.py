"""Planning: admitted jobs wait for the specs they build on ({job: NAME}), then the planning worker plans
them, one at a time in queue order (runner.daemon.scheduling); a plan's estimate is what picks a job's
devices. A plan that the executor can never run fails the job at once."""

from __future__ import annotations

import time
from pathlib import Path

from runner.daemon import states
from runner.daemon.config import DaemonConfig
from runner.daemon.jobs import Jobs
from runner.daemon.ledger import JobRuns
from runner.daemon.scheduling import queue_order
from runner.daemon.states import State, Step
from runner.daemon.store import Job
from runner.daemon.worker import MAX_STALLS, Reply, Stalls, Workers
from runner.errors import RunnerError
from runner.failures import Failure
from runner.rundir import read_plan


class Planning:
    def __init__(self, config: DaemonConfig, jobs: Jobs, workers: Workers, job_runs: JobRuns) -> None:
        self.config, self.jobs, self.store, self.log = config, jobs, jobs.store, jobs.log
        self.planner, self.job_runs = workers.planner, job_runs
        self.stalls = Stalls(config.stall)
        self.replan_at: dict[int, float] = {}
        """job id -> when a job whose planning stalled is planned again"""

    def release_dependents(self) -> None:
        """Jobs whose {job: NAME} specs succeeded go on to planning; the others say what they wait for."""
        for job in self.store.jobs(State.QUEUED):
            if job.step != Step.DEPENDENCY:
                continue
            with self.jobs.guard(job):
                waiting = self.jobs.unmet(job.depends_on, job.path)
                if not waiting:
                    self.jobs.move(job, states.PLANNING, reason="waiting to be planned")
                elif job.reason != self.jobs.waiting_for(waiting, job.path):
                    self.store.update(job.id, reason=self.jobs.waiting_for(waiting, job.path))

    def feed_planner(self) -> None:
        """Give the planning worker its next plan, in queue order."""
        if self.planner.current is not None or self.planner.ready_in():
            return
        self.planner.start()
        for job in queue_order([job for job in self.store.jobs(State.QUEUED) if job.step == Step.PLANNING]):
            if self.replan_at.get(job.id, 0) > time.monotonic():
                continue
            with self.jobs.guard(job):
                waiting = self.jobs.unmet(job.depends_on, job.path)
                if waiting:
                    self.jobs.move(job, states.DEPENDENCY, reason=self.jobs.waiting_for(waiting, job.path))
                    continue
                snapshot = self.config.snapshot_path(job.sha256)
                if not snapshot.is_file():
                    raise RunnerError(f"its snapshot {snapshot} is gone")
                plan_path = self.config.state_dir / "plans" / f"{job.id}.json"
                plan_path.parent.mkdir(parents=True, exist_ok=True)
                plan_path.unlink(missing_ok=True)
                self.planner.send("plan", job.id, self.config.plan_timeout, snapshot=snapshot, source=job.path,
                                  out=plan_path, runs_dir=self.config.runs_dir, log=self.config.log_path(job.id),
                                  cwd=self.config.folder, confine=self.config.confinement(job.author))
                self.store.update(job.id, reason="being planned")
                return

    def planned(self, job: Job, reply: Reply, plan_path: Path) -> None:
        """The planning worker's reply: the job waits for its devices, fails, or is planned again later."""
        if job.status != states.PLANNING:
            return
        if reply.stalled:
            again_in = self.stalls.again_in(job.id)
            if again_in is not None:
                self.replan_at[job.id] = time.monotonic() + again_in
                self.store.update(job.id, reason=f"its planning stalled ({reply.reason}: a hung filesystem?); "
                                                 f"planned again in {again_in:.0f} s")
                return
        self.stalls.clear(job.id)
        self.replan_at.pop(job.id, None)
        if reply.stalled:
            self.jobs.finish(job, State.FAILED, Failure.PLAN.value, f"its planning stalled {MAX_STALLS} times "
                             f"({reply.reason}); are its data or model files on a hung filesystem?")
            return
        if not reply.ok or not plan_path.is_file():
            reason = f"planning took longer than {self.config.plan_timeout:.0f} s" if reply.timed_out else (
                reply.reason or "the worker wrote no plan")
            self.jobs.finish(job, State.FAILED, Failure.PLAN.value, reason, hint=reply.hint)
            return
        plan = read_plan(plan_path)
        refused = self.config.executor.refusal(plan)
        if refused:
            self.jobs.finish(job, State.FAILED, Failure.PLAN.value, f"it can never start here: {refused[0]}",
                             hint=refused[1])
            return
        self.job_runs.planned(job.id, plan)
        estimate = sum(item.bytes for item in plan.memory.items)
        if self.jobs.move(job, states.RESOURCES, plan_path=str(plan_path), estimate_bytes=estimate,
                          devices=plan.device.count, device_type=plan.device.type,
                          reason="planned; waiting for its turn"):
            self.log.msg("job_planned", job=job.id, name=job.name, devices=plan.device.count, device=plan.device.type,
                         estimate_gib=round(estimate / 2**30, 2))
