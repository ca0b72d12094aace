"""`runner watch DIR --executor slurm`: the daemon's jobs run as Slurm jobs instead of its children.

A job's start is `runner submit`'s: its plan and sbatch script are written beside its runs
(runner.launch.slurm.prepare) and sbatch'ed; the Slurm job id is the handle of the job's execution in
the store (`{"slurm_job": ID}`), so a daemon that restarts adopts the jobs Slurm still knows instead of
submitting them again, and records from the manifest the end of those it has forgotten. Its state is read
with scontrol (sacct needs accounting storage, which a minimal cluster lacks), at most every
POLL_SECONDS per job; Slurm's output is copied into the daemon's log of the job, so `runner logs`
and the failure reasons read it as they do a local child's.

Stopping: warm is `scancel --signal=TERM` (runner writes a checkpoint and exits, and the job with
it); cold is `scancel` (Slurm's cancel: SIGTERM, SIGKILL after KillWait). A job still pending has
no process to signal: a warm stop cancels it.

Slurm allocates the devices, so the daemon reserves none (ClusterDevices): every planned job is
submitted at once (up to --max-jobs) and waits in Slurm's queue. Jobs are planned for the compute
node the Slurm config describes (`node:`), else for this machine, as `runner submit` plans them.
The state dir and the run root must be on storage the compute nodes see: the job reads its spec
snapshot and plan there and writes its run directory there.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.daemon.resources import GIB, Devices
from runner.daemon.store import Job
from runner.errors import RunnerError
from runner.launch import slurm
from runner.plan.models import Plan
from runner.rundir import plan_sha256, read_plan, runs_folder

POLL_SECONDS = 2.0
"""scontrol is asked about one job at most this often (every query is work for slurmctld)."""
COPY_BYTES = 4 * 2**20
"""Output copied into the daemon's log per poll, at most."""
RESUMABLE = {"TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
"""Ends that are not the run's doing: without a finished manifest the job resumes from its checkpoint
(like a local run whose process vanished), within --max-attempts."""


@dataclass
class SlurmRun:
    """A job's run as a Slurm job (a Run of runner.daemon.executor)."""

    job_id: int
    slurm_job: str
    output: Path | None
    """Slurm's output of the job (None: not a script runner wrote)."""
    log_path: Path
    """The daemon's log of the job, where the output is copied."""
    started: float = field(default_factory=time.monotonic)
    """When it was submitted or adopted; once it runs, when it began running (a job timeout counts
    from there, not from its wait in the queue)."""
    stop_sent: float | None = None
    status: slurm.JobStatus | None = None
    read_at: float = float("-inf")
    copied: int = 0
    """Bytes of the output already in the log."""
    forgotten: bool = False

    process_group = None  # it runs elsewhere: no local GPU memory to attribute

    def exit_code(self) -> int | None:
        self._read()
        self._copy_output()
        if self.forgotten:
            return -1  # ended while nobody looked; the manifest says how
        if self.status is None or not self.status.finished:
            return None
        self._copy_output(everything=True)
        return exit_status(self.status)

    def stop(self, cold: bool) -> None:
        try:
            status = None if cold else slurm.status(self.slurm_job)
            if status is not None and status.state == "RUNNING":
                slurm.cancel(self.slurm_job, signal="TERM")
            else:  # cold, or nothing runs yet that could checkpoint (scancel --signal would retry until it does)
                slurm.cancel(self.slurm_job)
        except RunnerError:  # slurmctld unreachable: the stop is tried again (cold after the grace)
            pass
        self.read_at = float("-inf")  # see the change at the next poll

    @property
    def detail(self) -> str | None:
        """Where the job is in Slurm, for its reason in `runner status`."""
        if self.status is None:
            return f"submitted as Slurm job {self.slurm_job}"
        if self.status.state == "PENDING":
            return f"queued in Slurm as job {self.slurm_job}" + (f" ({self.status.reason})" if self.status.reason else "")
        return f"running as Slurm job {self.slurm_job} on {self.status.nodes}"

    def _read(self) -> None:
        if self.forgotten or time.monotonic() - self.read_at < POLL_SECONDS:
            return
        self.read_at = time.monotonic()
        try:
            status = slurm.status(self.slurm_job)
        except RunnerError:  # slurmctld busy or restarting: the job is as it was last seen
            return
        if status is None:
            self.forgotten = True
            return
        if status.state == "RUNNING" and (self.status is None or self.status.state != "RUNNING"):
            self.started = time.monotonic()
        self.status = status

    def _copy_output(self, everything: bool = False) -> None:
        """What Slurm's output gained since the last copy: COPY_BYTES at most, or all once the job ended."""
        while self.output is not None:
            try:
                with open(self.output, "rb") as source:
                    source.seek(self.copied)
                    chunk = source.read(COPY_BYTES)
            except OSError:  # not created yet (a pending job), or not yet visible here
                return
            if chunk:
                with open(self.log_path, "ab") as log:
                    log.write(chunk)
                self.copied += len(chunk)
            if len(chunk) < COPY_BYTES or not everything:
                return


def exit_status(status: slurm.JobStatus) -> int:
    """A finished Slurm job's end as a child's exit status: 0, the batch script's code, minus the signal
    that ended it, or -1 where the run may resume (see RESUMABLE)."""
    if status.state == "COMPLETED":
        return 0
    if status.state == "CANCELLED":
        return -signal.SIGTERM
    if status.state in RESUMABLE:
        return -1
    code, _, ended_by = status.exit_code.partition(":")
    if ended_by.isdigit() and int(ended_by) != 0:
        return -int(ended_by)
    return int(code) if code.isdigit() and int(code) != 0 else 1


class Slurm:
    """Runs the daemon's jobs as Slurm jobs (runner.daemon.executor.Executor)."""

    name = "slurm"

    def __init__(self, config: slurm.SlurmConfig) -> None:
        self.config = config

    @classmethod
    def configured(cls, options: Mapping[str, object], command: list[str]) -> Slurm:
        """From `runner watch --executor slurm`'s options, as `runner submit` reads them (the settings file,
        then the options over it). `command` is not used: the batch script runs runner with the settings'
        python (else this one), as `runner submit`'s does."""
        config_file = options.get("config_file")
        return cls(slurm.load_config(slurm.config_path(config_file), required=bool(config_file),
                                     partition=options.get("partition"), account=options.get("account"),
                                     time=options.get("time_limit")))

    def devices(self) -> Devices:
        return ClusterDevices(self.config)

    def start(self, job: Job, plan_path: Path, runs_dir: Path, gpus: list[int], log_path: Path) -> SlurmRun:
        plan = read_plan(plan_path)
        queued = self._queued(job, plan, runs_dir)
        if queued is not None:  # submitted by a daemon that died before its store said so
            slurm_job, submission = queued
        else:
            submission = slurm.prepare(plan, runs_dir, self.config)
            slurm_job = slurm.submit(submission.script)
        output = submission.output(slurm_job)
        run = SlurmRun(job.id, slurm_job, output, log_path)
        if queued is not None:
            run.copied = _copied(log_path, slurm_job, output)
        else:
            _mark(log_path, slurm_job, output)
        return run

    @staticmethod
    def _queued(job: Job, plan: Plan, runs_dir: Path) -> tuple[str, slurm.Submission] | None:
        """A Slurm job queued or running for this job's plan and spec content: the store has no record of it
        when the daemon died between sbatch and the store's write, or the store was lost and rebuilt."""
        wanted = plan_sha256(plan)
        for slurm_job, script in slurm.queued_under(runs_folder(runs_dir.resolve(), plan) / "slurm", plan).items():
            submission = slurm.Submission(script.parent)
            try:
                submitted = read_plan(submission.plan)
            except RunnerError:  # not a plan (any more)
                continue
            if plan_sha256(submitted) == wanted and submitted.inputs.spec_sha256 == job.sha256:
                return slurm_job, submission
        return None

    def handle(self, run: SlurmRun) -> dict:
        return {"slurm_job": run.slurm_job}

    def refusal(self, plan: Plan) -> tuple[str, str] | None:
        return None  # several nodes included: Slurm allocates them (and sbatch says when it cannot)

    def adopt(self, job: Job, handle: dict, log_path: Path) -> SlurmRun | None:
        """The Slurm job a handle names while Slurm knows it (still queued, running, or ended: its end is
        read as for any other); None once Slurm has forgotten it (then its manifest tells)."""
        slurm_job = handle.get("slurm_job")
        if not isinstance(slurm_job, str) or not slurm_job:
            return None
        try:
            status = slurm.status(slurm_job)
        except RunnerError:  # slurmctld not answering now: adopt it and ask again at the next poll
            return SlurmRun(job.id, slurm_job, None, log_path)
        if status is None:
            return None
        submission = slurm.submission_of(status)
        output = submission.output(slurm_job) if submission else None
        run = SlurmRun(job.id, slurm_job, output, log_path, status=status, read_at=time.monotonic())
        if output is not None:
            run.copied = _copied(log_path, slurm_job, output)
        return run


class ClusterDevices(Devices):
    """Slurm allocates the devices: every job may be submitted now, none waits for room here. Plans are
    made for the compute node the Slurm config describes, else for this machine (as `runner submit`)."""

    def __init__(self, config: slurm.SlurmConfig) -> None:
        super().__init__(gpus=[])
        node = config.node
        self.planned_for = ([{"name": node.gpu_name, "memory_bytes": int(node.gpu_memory_gb * GIB), "bf16": node.bf16}
                             for _ in range(node.gpus)] if node is not None else Devices.detect().describe())

    def describe(self) -> list[dict]:
        return self.planned_for

    def fit(self, device_type: str, count: int, estimate: int) -> list[int] | str:
        return []

    def never_fits(self, device_type: str, count: int, estimate: int) -> str | None:
        return None

    def reserve(self, job_id: int, gpus: list[int], estimate: int) -> None:
        """Nothing to hold here: Slurm allocates the job's devices when it starts it."""


def _marker(slurm_job: str, output: Path) -> bytes:
    return f"[slurm] job {slurm_job}: its output ({output}) follows\n".encode()


def _mark(log_path: Path, slurm_job: str, output: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(_marker(slurm_job, output))


def _copied(log_path: Path, slurm_job: str, output: Path) -> int:
    """How much of the output an earlier daemon copied: what follows the job's marker in the log. With no
    marker (the log was lost), a new one, and the output from its start."""
    marker = _marker(slurm_job, output)
    try:
        text = log_path.read_bytes()
    except OSError:
        text = b""
    at = text.rfind(marker)
    if at < 0:
        _mark(log_path, slurm_job, output)
        return 0
    return len(text) - at - len(marker)
