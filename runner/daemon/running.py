"""Runs: planned jobs start in queue order on the devices scheduling gives them (runner.daemon.scheduling),
through the executor (runner.daemon.executor); each start is an execution in the store. Runs that ended
become the job's outcome: what its run directory's manifest recorded, else how the process ended. A run
that vanished without recording an end resumes from its last checkpoint, a bounded number of times.
Cancellations and the job timeout stop runs warm (a checkpoint), then cold after STOP_GRACE_SECONDS."""

from __future__ import annotations

import time
from pathlib import Path

from runner.daemon import children, ledger, states
from runner.daemon.config import DaemonConfig
from runner.daemon.executor import Run
from runner.daemon.jobs import Jobs, one_line
from runner.daemon.ledger import JobRuns
from runner.daemon.resources import Devices
from runner.daemon.scheduling import decide
from runner.daemon.states import State, Step
from runner.daemon.store import Job
from runner.failures import Failure

STOP_GRACE_SECONDS = 120
"""After a warm stop (a checkpoint, then the end), how long a run has before it is ended cold."""


class Running:
    def __init__(self, config: DaemonConfig, jobs: Jobs, devices: Devices, job_runs: JobRuns) -> None:
        self.config, self.jobs, self.store, self.log = config, jobs, jobs.store, jobs.log
        self.executor, self.devices, self.job_runs = config.executor, devices, job_runs
        self.runs: dict[int, Run] = {}
        """job id -> its run"""
        self._run_dir_known: set[int] = set()
        self._ended_while_full: set[int] = set()
        """job ids whose run ended while the disk was full: resumed when there is room, not failed"""

    def reap(self, paused: str | None, stopping: bool) -> None:
        """Runs that ended become results; the others are watched (timeout, run directory, detail)."""
        for job_id, run in list(self.runs.items()):
            code = run.exit_code()
            job = self.store.get(job_id)
            with self.jobs.guard(job):
                if code is None:
                    self._enforce_timeout(run)
                    self._note_run_directory(job)
                    self._note_detail(job, run)
                    continue
                if paused:  # an end the full disk may have caused (a write the run could not make)
                    self._ended_while_full.add(job_id)
                self._ran(job, code, run, stopping)
                self.devices.release(job_id)
                del self.runs[job_id]  # only once its end is recorded: a full disk retries it
                self._ended_while_full.discard(job_id)

    def _ran(self, job: Job, code: int, run: Run, stopping: bool) -> None:
        if job.state != State.RUNNING:  # cancelled by a person between the start and its record
            self.log.msg("run_ended", job=job.id, name=job.name, state=job.state.value, exit_code=code)
            return
        run_dir = self.job_runs.of(job)
        manifest = run_dir.read_manifest() if run_dir else None
        recorded = manifest is not None and manifest.state in ledger.FINISHED
        exit_code = None if code == -1 else code
        if job.cancel_requested:
            self.jobs.finish(job, State.CANCELLED, None, "cancelled while running", run=run_dir, exit_code=exit_code)
        elif not recorded and stopping:
            if self.jobs.move(job, states.RECOVERING, run_dir=str(run_dir.path) if run_dir else None, exit_code=exit_code,
                              reason="the daemon stopped; the run resumes from its checkpoint at the next start"):
                self.log.msg("job_paused", job=job.id, name=job.name)
        elif not recorded and run.stop_sent is not None:
            self.jobs.finish(job, State.FAILED, Failure.TIMEOUT.value,
                             f"ran longer than the job timeout ({self.config.job_timeout:.0f} s)", run=run_dir, exit_code=exit_code)
        elif not recorded and code == -1:
            self.vanished(job, "its process vanished without recording an end")
        elif not recorded and code > 0 and job.id in self._ended_while_full:
            self.vanished(job, "it ended without recording an end while the disk was full", exit_code=exit_code)
        else:
            state, failure, reason = children.run_outcome(code, manifest, run.log_path)
            self.jobs.finish(job, state, failure, reason, run=run_dir, manifest=manifest, exit_code=exit_code,
                             hint=manifest.error.hint if manifest and manifest.error else None)

    def _note_run_directory(self, job: Job) -> None:
        """Record where a running job writes, once it exists, so `runner status` can show progress."""
        if job.id in self._run_dir_known:
            return
        run_dir = self.job_runs.of(job)
        if run_dir is not None:
            self.store.update(job.id, run_dir=str(run_dir.path))
            self._run_dir_known.add(job.id)

    def _note_detail(self, job: Job, run: Run) -> None:
        """Where a run is, as its reason, when its executor knows more than "running" (a Slurm job's queue)."""
        if run.detail and run.detail != job.reason:
            self.store.update(job.id, expect=State.RUNNING, reason=run.detail)

    def _enforce_timeout(self, run: Run) -> None:
        if self.config.job_timeout is None:
            return
        if time.monotonic() - run.started > self.config.job_timeout and run.stop_sent is None:
            run.stop(cold=False)
            run.stop_sent = time.monotonic()
        elif run.stop_sent is not None and time.monotonic() - run.stop_sent > STOP_GRACE_SECONDS:
            run.stop(cold=True)

    def cancel_requested(self) -> None:
        """Runs a person cancelled (runner cancel) checkpoint and stop."""
        for job in self.store.jobs(State.RUNNING):
            run = self.runs.get(job.id)
            if job.cancel_requested and run is not None and run.stop_sent is None:
                run.stop(cold=False)
                run.stop_sent = time.monotonic()
                self.log.msg("job_cancelling", job=job.id, name=job.name)

    def start_ready(self) -> None:
        """Start the planned jobs (and the ones to resume) that the devices, the slots and the queue allow."""
        ready = []
        for job in self.store.jobs(State.RECOVERING, State.QUEUED):
            if job.id in self.runs or job.step not in (None, Step.RESOURCES) or not job.plan_path \
                    or job.estimate_bytes is None:
                continue
            with self.jobs.guard(job):
                if job.state == State.RECOVERING and self.record_finished(job, "its run had finished"):
                    continue
                ready.append(job)
        if any(job.device_type == "cuda" for job in ready):
            self.devices.read_usage({job_id: run.process_group for job_id, run in self.runs.items()
                                     if run.process_group is not None})
        for decision in decide(ready, self.devices, len(self.runs), self.config.max_jobs):
            job = decision.job
            with self.jobs.guard(job):
                if decision.never:
                    self.jobs.finish(job, State.FAILED, Failure.PLAN.value,
                                     f"it can never start here: {decision.never}",
                                     hint="plan it for this box's GPUs (hardware.gpus, hardware.max_memory_gb), or "
                                          "run it elsewhere")
                elif decision.gpus is None:
                    if job.reason != decision.waits:
                        self.store.update(job.id, reason=decision.waits)
                else:
                    self._start(job, decision.gpus)

    def _start(self, job: Job, gpus: list[int]) -> None:
        run = self.executor.start(job, Path(job.plan_path), self.config.runs_dir, gpus,
                                  self.config.log_path(job.id))
        self.runs[job.id] = run
        resumed = job.state == State.RECOVERING
        handle = self.executor.handle(run)
        if not self.jobs.start(job, self.executor.name, handle, gpus=",".join(map(str, gpus)),
                               reason="resuming from the last checkpoint" if resumed else "running"):
            run.stop(cold=True)  # a person cancelled it meanwhile; its end is reaped like any other
            return
        self.log.msg("job_started", job=job.id, name=job.name, **handle, gpus=gpus, attempt=job.attempts + 1,
                     resumed=resumed)

    def adopt(self, job: Job) -> bool:
        """Take back the run of a job left `running` by a daemon that died, if its executor still has it."""
        execution = job.running_execution
        if execution is None or execution.executor != self.executor.name:
            return False
        run = self.executor.adopt(job, execution.handle, self.config.log_path(job.id))
        if run is None:
            return False
        self.runs[job.id] = run
        if job.estimate_bytes is not None:
            self.devices.reserve(job.id, [int(gpu) for gpu in (job.gpus or "").split(",") if gpu], job.estimate_bytes)
        self.log.msg("job_adopted", job=job.id, name=job.name, **execution.handle)
        return True

    def record_finished(self, job: Job, why: str) -> bool:
        """Record a job's outcome from its run directory when its manifest says it finished (in the
        attempt the daemon started): it is never started again."""
        run_dir = self.job_runs.of(job)
        manifest = run_dir.read_manifest() if run_dir else None
        recorded = ledger.outcome(manifest) if manifest else None
        execution = job.running_execution
        pid = execution.handle.get("pid") if execution else None  # a local run is recognised by its pid too
        if recorded is None or not ledger.reflects_attempt(manifest, pid, job.started_at):
            return False
        self.jobs.finish(job, recorded.state, recorded.failure, f"{one_line(recorded.reason)} ({why})", run=run_dir,
                         manifest=manifest)
        return True

    def vanished(self, job: Job, why: str, exit_code: int | None = None) -> None:
        """Resume from the last checkpoint, a bounded number of times."""
        if job.attempts >= self.config.max_attempts:
            self.jobs.finish(job, State.FAILED, Failure.KILLED.value, f"{why}, {job.attempts} attempts: giving up",
                             exit_code=exit_code)
        elif self.jobs.move(job, states.RECOVERING, reason=f"{why}; resuming", exit_code=exit_code):
            self.log.msg("job_recovering", job=job.id, name=job.name, attempts=job.attempts)

    def drop(self, job: Job) -> None:
        """A job the daemon gives up on: its run ends now, and its devices are free."""
        run = self.runs.pop(job.id, None)
        if run is not None:
            run.stop(cold=True)
        self.devices.release(job.id)

    def stop(self, cold: bool) -> None:
        for run in self.runs.values():
            run.stop(cold=cold)

    def alive(self) -> bool:
        return any(run.exit_code() is None for run in self.runs.values())
