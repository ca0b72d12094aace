"""The reconcile loop: make the store agree with the folder, and the processes with the store.

    recover             the run directories first: a finished manifest is the job's outcome, never
                        a reason to run it again; then adopt live children, resume the others
    until stopped:
        reap children           finished checks, plans and runs become results
        scan the folder         new content is snapshotted and checked in a child; deleted or
                                changed queued specs are withdrawn; moved ones followed
        honour cancellations
        plan queued jobs        `runner plan SNAPSHOT --source SPEC`: the estimate decides the devices
        start ready jobs        `runner run --plan` per job, in its own process group
        sleep until woken       a file event, a child's end, a signal, or the periodic rescan
    stop warm (children checkpoint and stop), or cold on a second signal

Nothing a spec controls runs in this process: its checks, plans and runs are children, with
limits; this loop reads only their bounded reports. A job is its spec's content (sha256): the
bytes hashed are the bytes snapshotted, checked, planned and run, so a file that changes later
is a new job, never a swap, and the same content anywhere in the folder is one job. An error
while handling one job fails that job with a one-line reason; the others go on. A disk too full
to write state pauses admission until there is room again.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sqlite3
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from runner.daemon import admission, children, ledger
from runner.daemon.admission import Allowances, Verdict
from runner.daemon.children import Child
from runner.daemon.paths import disk_full
from runner.daemon.resources import Devices
from runner.daemon.scanner import Scanner, SpecFile
from runner.daemon.store import Failure, Job, State, Store
from runner.errors import RunnerError
from runner.fsutil import write_atomically
from runner.manifest import Manifest
from runner.rundir import RunDirectory, plan_sha256, read_plan, runs_folder, runs_of
from runner.spec.jobs import MAX_SPEC_BYTES

STOP_GRACE_SECONDS = 120
BUSY_POLL_SECONDS = 0.5
RETRY_SECONDS = 2.0
PLAN_TIMEOUT_SECONDS = 1800.0
CHECKS_AT_ONCE = 2


@dataclass
class Check:
    """A spec content being checked for admission."""

    spec: SpecFile
    child: Child
    report: Path
    launched: float
    timed_out: bool = False


class Waker:
    """Wakes the loop from a signal handler or another thread: a byte down a pipe. Nothing here
    takes a lock, so a signal arriving at any moment cannot deadlock the loop."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(self.write_end, False)

    def wake(self) -> None:
        with suppress(BlockingIOError):  # already awake
            os.write(self.write_end, b"!")

    def wait(self, timeout: float) -> None:
        with suppress(InterruptedError):
            select.select([self.read_end], [], [], timeout)
        with suppress(BlockingIOError):
            while os.read(self.read_end, 4096):
                pass


class Supervisor:
    def __init__(self, folder: Path, store: Store, state_dir: Path, runs_dir: Path, *, settle: float = 0.5,
                 invalid_grace: float = 5.0, rescan: float = 30.0, poll: bool = False, max_attempts: int = 3,
                 job_timeout: float | None = None, command: list[str] | None = None, devices: Devices | None = None,
                 allow: Allowances = Allowances(), log_file=None) -> None:
        self.folder, self.store, self.state_dir, self.runs_dir = folder.resolve(), store, state_dir, runs_dir
        self.scanner = Scanner(folder, settle)
        self.invalid_grace = invalid_grace
        self.rescan, self.poll, self.max_attempts, self.job_timeout = rescan, poll, max_attempts, job_timeout
        self.command = command or children.runner_command()
        self.devices = devices if devices is not None else Devices.detect()
        self.allow = allow
        self.children: dict[int, Child] = {}
        self.checks: dict[str, Check] = {}
        """spec sha256 -> its admission check in progress"""
        self._recheck_at: dict[str, float] = {}
        """spec sha256 -> when an invalid result inside the invalid grace is checked again"""
        self._present: set[str] = set()
        self._plan_runs: dict[int, tuple[Path, str]] = {}
        """job id -> (runs folder, plan hash), read from its plan file once"""
        self._said: set[tuple[str, str]] = set()
        self._imported: set[int] = set()
        """jobs recorded from run directories at this start"""
        self.paused: str | None = None
        self.recovered = False
        self.waker = Waker()
        self.stopping = False
        self.cold = False
        self._stop_logged = (False, False)
        self.log = structlog.wrap_logger(
            structlog.PrintLogger(log_file), processors=[structlog.processors.TimeStamper(fmt="iso", utc=True),
                                                         structlog.processors.JSONRenderer()])

    # --- the loop --------------------------------------------------------------------------------

    def serve(self) -> int:
        self._on_signals()
        self.log.msg("daemon_started", folder=str(self.folder), state_dir=str(self.state_dir), pid=os.getpid(),
                     runs_dir=str(self.runs_dir), gpus=[gpu.index for gpu in self.devices.gpus],
                     allow_reward_functions=self.allow.reward_functions, allow_remote_code=self.allow.remote_code)
        observer = self._watch()
        try:
            while not self.stopping:
                wait = self.reconcile()
                self.waker.wait(wait)
                self._log_stop()
        finally:
            observer.stop()
            self._log_stop()
            self.shutdown()
        self.log.msg("daemon_stopped", cold=self.cold)
        return 0

    def reconcile(self) -> float:
        """One pass; returns how long the loop may sleep before the next."""
        wait = self._pass("reconcile", self._reconcile)
        return RETRY_SECONDS if wait is False else wait

    def _reconcile(self) -> float:
        if self.store.replaced():
            self.log.msg("store_restored", detail=self.store.restore())
        if not self.recovered:  # at the first pass, and again until it succeeds (a full disk, say)
            self.recover()
            self.recovered = True
        self._pause_when_full(disk_full(self.state_dir))
        self.reap()
        settle_wait = self.scan()
        self.cancel_requested()
        self.plan_queued()
        self.start_ready()
        waits = [self.rescan, settle_wait if settle_wait is not None else self.rescan]
        if self.children or self.checks or self.store.jobs(State.QUEUED, State.RECOVERING):
            waits.append(BUSY_POLL_SECONDS)
        return max(0.05, min(waits))

    def _pass(self, what: str, step):
        """Run one step of the loop; whatever it raises is logged and the loop goes on (a full disk
        pauses admission). Returns the step's result, or False when it failed."""
        try:
            return step()
        except Exception as error:  # the daemon outlives any one pass; the next pass tries again
            if _disk_full_error(error):
                self._pause_when_full(f"the disk is full ({_one_line(error)})")
            else:
                self.log.msg(f"{what}_failed", error=_one_line(error))
            return False

    @contextmanager
    def _guard(self, job: Job):
        """Handle one job: an error fails that job (one line) and leaves the others alone."""
        try:
            yield
        except Exception as error:
            if _disk_full_error(error):
                raise
            reason = f"the daemon could not handle this job: {_one_line(error)}"
            self.log.msg("job_error", job=job.id, name=job.name, error=reason)
            child = self.children.pop(job.id, None)
            if child is not None:
                child.signal(signal.SIGKILL)
            self.devices.release(job.id)
            with suppress(Exception):
                self._finish(job, State.FAILED, Failure.RUNTIME.value, reason)

    def _pause_when_full(self, why: str | None) -> None:
        if why != self.paused:
            self.log.msg("admission_paused" if why else "admission_resumed", reason=why,
                         state_dir=str(self.state_dir))
        self.paused = why

    # --- desired state: the folder -----------------------------------------------------------------

    def scan(self) -> float | None:
        files, self._present, wait = self.scanner.scan()
        for path, why in self.scanner.ignored.items():
            self._say_once("spec_ignored", path, path=path, reason=why)
        for spec in files:
            try:
                retry_in = self._consider(spec)
            except Exception as error:
                if _disk_full_error(error):
                    raise
                self.log.msg("spec_error", path=spec.path, error=_one_line(error))
                retry_in = RETRY_SECONDS
            if retry_in is not None:
                wait = retry_in if wait is None else min(wait, retry_in)
        for job in self.store.jobs(State.QUEUED):
            if job.path not in self._present and job.path.startswith(str(self.folder)):
                self._withdraw(job, "the spec file was deleted")
        return wait

    def _consider(self, spec: SpecFile) -> float | None:
        """A settled spec file: the job of its content, or a check that makes one. Returns the seconds
        to wait when it must wait."""
        job = self.store.find(spec.sha256)
        if job is not None:
            self._seen_again(job, spec)
            return None
        if spec.sha256 in self.checks or self.stopping:
            return None
        if self.paused:
            return RETRY_SECONDS
        recheck = self._recheck_at.get(spec.sha256, 0) - time.monotonic()
        if recheck > 0:
            return recheck
        if len(self.checks) >= CHECKS_AT_ONCE:
            return BUSY_POLL_SECONDS
        if spec.oversized:
            summary = f"file is larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be"
            self._record(spec, Verdict(False, reason=summary, diagnostics=[admission.diagnostic(
                os.path.relpath(spec.path, self.folder), "", None, summary, "a spec names its data files")]))
            return None
        snapshot = self._snapshot(spec)
        checks = self.state_dir / "checks"
        checks.mkdir(parents=True, exist_ok=True)
        report, log = checks / f"{spec.sha256}.json", checks / f"{spec.sha256}.log"
        for leftover in (report, log):  # of a check a stopped daemon left behind
            leftover.unlink(missing_ok=True)
        command = admission.command(snapshot, Path(spec.path), report)
        child = children.launch(-1, "check", command, log, dict(os.environ), cwd=self.folder)
        self.checks[spec.sha256] = Check(spec, child, report, time.monotonic())
        return None

    def _seen_again(self, job: Job, spec: SpecFile) -> None:
        """Content the store knows: where it is now decides nothing new, except that a job withdrawn
        because its file went away or changed comes back when the content does (a rename, an undo)."""
        if job.path != spec.path and job.path in self._present:
            self._say_once("spec_duplicate", spec.path, path=spec.path, job=job.id, name=job.name,
                           detail=f"the same content as {job.path}: one job per content")
            return
        revive = job.state == State.CANCELLED and job.withdrawn
        if job.path == spec.path and not revive:
            return
        fields: dict = {"path": spec.path}
        moved_folder = Path(job.path).parent != Path(spec.path).parent
        if revive or (job.state == State.QUEUED and job.id not in self.children and moved_folder):
            # relative paths resolve beside the spec: a spec in another folder is planned again
            fields.update(plan_path=None, estimate_bytes=None, reason="waiting to be planned")
        if revive:
            fields.update(state=State.QUEUED, withdrawn=0, finished_at=None)
        if self.store.update(job.id, expect=job.state, **fields):
            self.log.msg("job_revived" if revive else "job_moved", job=job.id, name=job.name, path=spec.path,
                         was=job.path)
            if revive:
                self._supersede(spec.path, job.id)

    def _snapshot(self, spec: SpecFile) -> Path:
        """The bytes that were hashed, kept: they are what is checked, planned and run."""
        path = self.state_dir / "snapshots" / f"{spec.sha256}.yaml"
        if not path.is_file() or path.stat().st_size != len(spec.content):
            write_atomically(path, spec.content)
        return path

    def _record(self, spec: SpecFile, verdict: Verdict) -> None:
        if verdict.valid:
            owner = self._name_owner(verdict.name, spec.path)
            if owner is not None:
                verdict = admission.name_taken(verdict.name, spec.path, owner.path, owner.id, self.folder)
        if verdict.valid:
            job = self.store.add(spec.path, spec.sha256, verdict.name, State.QUEUED, depends_on=verdict.depends_on,
                                 reason="waiting to be planned")
            self.log.msg("job_queued", job=job.id, name=job.name, path=spec.path, depends_on=verdict.depends_on)
        else:
            job = self.store.add(spec.path, spec.sha256, None, State.INVALID, diagnostics=verdict.diagnostics,
                                 reason=_one_line(verdict.reason))
            self.log.msg("job_invalid", job=job.id, path=spec.path, reason=verdict.reason)
        self._supersede(spec.path, job.id)

    def _name_owner(self, name: str | None, path: str) -> Job | None:
        """The spec that already has this name in the folder: a present file whose newest job bears it."""
        for job in self.store.named(name or ""):
            if job.path != path and job.path in self._present:
                newest = self.store.newest_at(job.path)
                if newest is not None and newest.name == name:
                    return job
        return None

    def _supersede(self, path: str, keep: int) -> None:
        """Changed content replaces the content that has not started yet (planning included)."""
        for older in self.store.jobs(State.QUEUED):
            if older.path == path and older.id != keep:
                self._withdraw(older, "superseded: the spec changed")

    def _withdraw(self, job: Job, reason: str) -> None:
        """Cancel a queued job because its file went away or changed; its planning, if any, stops."""
        child = self.children.get(job.id)
        if child is not None and child.stage != "plan":
            return  # started: it runs to its end
        if child is not None:
            child.signal(signal.SIGKILL)
            del self.children[job.id]
        self._finish(job, State.CANCELLED, None, reason, expect=State.QUEUED, withdrawn=1)

    # --- actual state: children ---------------------------------------------------------------------

    def reap(self) -> None:
        for sha, check in list(self.checks.items()):
            self._reap_check(sha, check)
        for job_id, child in list(self.children.items()):
            code = child.exit_code()
            job = self.store.get(job_id)
            with self._guard(job):
                if code is None:
                    self._enforce_timeout(child)
                    self._note_run_directory(child)
                    continue
                if child.stage == "plan":
                    self._planned(job, code, child)
                else:
                    self._ran(job, code, child)
                    self.devices.release(job_id)
                del self.children[job_id]  # only once its end is recorded: a full disk retries it

    def _reap_check(self, sha: str, check: Check) -> None:
        code = check.child.exit_code()
        if code is None:
            if time.monotonic() - check.launched > admission.CHECK_TIMEOUT_SECONDS and not check.timed_out:
                check.child.signal(signal.SIGKILL)
                check.timed_out = True
            return
        del self.checks[sha]
        if self.stopping:
            return
        if check.timed_out:
            verdict = Verdict(False, reason=f"checking this spec took longer than {admission.CHECK_TIMEOUT_SECONDS:.0f} s "
                                            "(are its data or model files on a slow or hung filesystem?)")
        else:
            verdict = admission.verdict(code, admission.read_report(check.report),
                                        children.last_words(check.child.log_path), self.allow)
        for leftover in (check.report, check.child.log_path):
            with suppress(OSError):
                leftover.unlink()
        age = check.spec.stable_for + time.monotonic() - check.launched
        if not verdict.valid and age < self.invalid_grace and sha not in self._recheck_at:
            self._recheck_at[sha] = time.monotonic() + self.invalid_grace - age  # written in parts? look again
            return
        self._recheck_at.pop(sha, None)
        self._record(check.spec, verdict)

    def _planned(self, job: Job, code: int, child: Child) -> None:
        if self.stopping and code != 0:  # stopped by the shutdown: plan it again at the next start
            self.store.update(job.id, plan_path=None, reason="waiting to be planned")
            return
        if code != 0 or not job.plan_path or not Path(job.plan_path).is_file():
            reason = children.last_words(child.log_path) or f"runner plan exited with code {code}"
            if child.stop_sent is not None:
                reason = f"planning took longer than {PLAN_TIMEOUT_SECONDS:.0f} s"
            self._finish(job, State.FAILED, Failure.PLAN.value, reason)
            return
        plan = read_plan(Path(job.plan_path))
        self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        estimate = sum(item.bytes for item in plan.memory.items)
        self.store.update(job.id, estimate_bytes=estimate, devices=plan.device.count, device_type=plan.device.type,
                          reason="planned; waiting for a device")
        self.log.msg("job_planned", job=job.id, name=job.name, devices=plan.device.count, device=plan.device.type,
                     estimate_gib=round(estimate / 2**30, 2))

    def _ran(self, job: Job, code: int, child: Child) -> None:
        run = self._run_directory(job)
        manifest = run.read_manifest() if run else None
        recorded = manifest is not None and manifest.state in ledger.FINISHED
        if job.cancel_requested:
            self._finish(job, State.CANCELLED, None, "cancelled while running", run=run)
        elif not recorded and self.stopping:
            self.store.update(job.id, state=State.RECOVERING, pid=None, run_dir=str(run.path) if run else None,
                              reason="the daemon stopped; the run resumes from its checkpoint at the next start")
            self.log.msg("job_paused", job=job.id, name=job.name)
        elif not recorded and child.stop_sent is not None:
            self._finish(job, State.FAILED, Failure.TIMEOUT.value,
                         f"ran longer than the job timeout ({self.job_timeout:.0f} s)", run=run)
        elif not recorded and code == -1:
            self._vanished(job, "its process vanished without recording an end")
        else:
            state, failure, reason = children.run_outcome(code, manifest, child.log_path)
            self._finish(job, state, failure, reason, run=run, manifest=manifest)

    def _note_run_directory(self, child: Child) -> None:
        """Record where a running job writes, once it exists, so `runner status` can show progress."""
        if child.stage != "run" or child.run_dir_known:
            return
        job = self.store.get(child.job_id)
        run = self._run_directory(job)
        if run is not None:
            self.store.update(job.id, run_dir=str(run.path))
            child.run_dir_known = True

    def _enforce_timeout(self, child: Child) -> None:
        limit = self.job_timeout if child.stage == "run" else PLAN_TIMEOUT_SECONDS
        if limit is None:
            return
        elapsed = time.monotonic() - child.started
        if elapsed > limit and child.stop_sent is None:
            child.signal(signal.SIGTERM if child.stage == "run" else signal.SIGKILL)
            child.stop_sent = time.monotonic()
        elif child.stop_sent is not None and time.monotonic() - child.stop_sent > STOP_GRACE_SECONDS:
            child.signal(signal.SIGKILL)

    def cancel_requested(self) -> None:
        for job in self.store.jobs(State.RUNNING):
            child = self.children.get(job.id)
            if job.cancel_requested and child is not None and child.stop_sent is None:
                child.signal(signal.SIGTERM)
                child.stop_sent = time.monotonic()
                self.log.msg("job_cancelling", job=job.id, name=job.name)

    def plan_queued(self) -> None:
        if self.paused or self.stopping or any(child.stage == "plan" for child in self.children.values()):
            return  # one plan at a time: planning loads a tokenizer and imports torch
        for job in self.store.jobs(State.QUEUED):
            if job.plan_path or job.id in self.children:
                continue
            with self._guard(job):
                waiting = [name for name in job.depends_on
                           if self.store.latest_succeeded(name, str(Path(job.path).parent)) is None]
                if waiting:
                    self.store.update(job.id, reason=f"waiting for {', '.join(waiting)} to succeed")
                    continue
                snapshot = self.state_dir / "snapshots" / f"{job.sha256}.yaml"
                if not snapshot.is_file():
                    raise RunnerError(f"its snapshot {snapshot} is gone")
                plan_path = self.state_dir / "plans" / f"{job.id}.json"
                plan_path.parent.mkdir(parents=True, exist_ok=True)
                command = [*self.command, "plan", str(snapshot), "--source", job.path, "--out", str(plan_path),
                           "--runs-dir", str(self.runs_dir)]
                self.children[job.id] = children.launch(job.id, "plan", command, self._log_path(job),
                                                        dict(os.environ))
                self.store.update(job.id, plan_path=str(plan_path), reason="planning")
                return

    def start_ready(self) -> None:
        if self.stopping or self.paused:
            return
        for job in self.store.jobs(State.RECOVERING, State.QUEUED):
            if job.id in self.children or not job.plan_path or job.estimate_bytes is None:
                continue
            with self._guard(job):
                if job.state == State.RECOVERING and self._record_finished(job, "its run had finished"):
                    continue
                gpus = self.devices.reserve(job.id, job.device_type or "cpu", job.devices or 1, job.estimate_bytes)
                if gpus is not None:
                    self._start(job, gpus)

    def _start(self, job: Job, gpus: list[int]) -> None:
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        command = [*self.command, "run", "--plan", job.plan_path, "--runs-dir", str(self.runs_dir), "--quiet"]
        child = children.launch(job.id, "run", command, self._log_path(job), env)
        self.children[job.id] = child
        resumed = job.state == State.RECOVERING
        self.store.update(job.id, state=State.RUNNING, pid=child.pid, pid_start=children.process_start_time(child.pid),
                          gpus=",".join(map(str, gpus)), attempts=job.attempts + 1, started_at=time.time(),
                          reason="resuming from the last checkpoint" if resumed else "running")
        self.log.msg("job_started", job=job.id, name=job.name, pid=child.pid, gpus=gpus, attempt=job.attempts + 1,
                     resumed=resumed)

    # --- recovery and shutdown --------------------------------------------------------------------

    def recover(self) -> None:
        """Make the store say what the run directories say, then handle rows left `running` by a
        daemon that died: adopt live children, record runs that finished meanwhile, resume the others."""
        self._import_runs()
        for job in self.store.jobs(State.RUNNING):
            with self._guard(job):
                if job.pid and children.process_start_time(job.pid) == job.pid_start:
                    self.children[job.id] = Child(job.id, "run", job.pid, log_path=self._log_path(job))
                    if job.estimate_bytes is not None:
                        self.devices.reserve(job.id, job.device_type or "cpu", job.devices or 1, job.estimate_bytes)
                    self.log.msg("job_adopted", job=job.id, name=job.name, pid=job.pid)
                elif not self._record_finished(job, "it finished while the daemon was down"):
                    self._vanished(job, "its process vanished while the daemon was down")
        for job in self.store.jobs(State.QUEUED):
            if job.plan_path and job.estimate_bytes is None:  # its plan child died with the daemon
                self.store.update(job.id, plan_path=None, reason="waiting to be planned")

    def _import_runs(self) -> None:
        """Runs the store does not know (it was lost, emptied, or moved aside) become rows again."""
        known = {job.sha256: job for job in self.store.jobs()}
        imported = 0
        for run, manifest in ledger.daemon_runs(self.runs_dir, self.state_dir):
            job = known.get(manifest.spec_sha256)
            recorded = ledger.outcome(manifest)
            if job is not None and not (job.id in self._imported and recorded and recorded.state == State.SUCCEEDED):
                continue
            plan = manifest.plan
            fields = dict(run_dir=str(run.path), attempts=len(manifest.attempts), finished_at=time.time(),
                          started_at=_epoch(manifest.timings.started_at))
            if recorded is not None:
                fields.update(state=recorded.state, failure=recorded.failure,
                              reason=f"{_one_line(recorded.reason)} (recorded from its run directory)")
            else:
                fields.update(state=State.RECOVERING, plan_path=str(run.plan), finished_at=None,
                              estimate_bytes=sum(item.bytes for item in plan.memory.items), devices=plan.device.count,
                              device_type=plan.device.type, reason="recorded from its run directory; resuming")
            if job is None:
                job = self.store.add(plan.inputs.spec_source or plan.inputs.spec_path, manifest.spec_sha256,
                                     manifest.name, fields.pop("state"), **fields)
            else:
                self.store.update(job.id, **fields)
            known[manifest.spec_sha256] = job
            self._imported.add(job.id)
            imported += 1
        if imported:
            self.log.msg("store_rebuilt", runs=imported,
                         detail="jobs recorded from run directories the store did not know")

    def _record_finished(self, job: Job, why: str) -> bool:
        """Record a job's outcome from its run directory when its manifest says it finished (in the
        attempt the daemon started): it is never started again."""
        run = self._run_directory(job)
        manifest = run.read_manifest() if run else None
        recorded = ledger.outcome(manifest) if manifest else None
        if recorded is None or not ledger.reflects_attempt(manifest, job.pid, job.started_at):
            return False
        self._finish(job, recorded.state, recorded.failure, f"{_one_line(recorded.reason)} ({why})", run=run,
                     manifest=manifest)
        return True

    def _vanished(self, job: Job, why: str) -> None:
        """Resume from the last checkpoint, a bounded number of times."""
        if job.attempts >= self.max_attempts:
            self._finish(job, State.FAILED, Failure.KILLED.value, f"{why}, {job.attempts} attempts: giving up")
            return
        self.store.update(job.id, state=State.RECOVERING, pid=None, reason=f"{why}; resuming")
        self.log.msg("job_recovering", job=job.id, name=job.name, attempts=job.attempts)

    def shutdown(self) -> None:
        runs = [child for child in self.children.values() if child.stage == "run"]
        for check in self.checks.values():
            check.child.signal(signal.SIGKILL)
        for child in self.children.values():
            child.signal(signal.SIGKILL if child.stage == "plan" or self.cold else signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        waiting = [*self.children.values(), *(check.child for check in self.checks.values())]
        while any(child.exit_code() is None for child in waiting):
            self._log_stop()
            if self.cold or time.monotonic() > deadline:
                for child in waiting:
                    child.signal(signal.SIGKILL)
            time.sleep(0.2)
        self._pass("shutdown", self.reap)
        self.log.msg("children_stopped", runs=len(runs))

    def _on_signals(self) -> None:
        def handler(signum, frame):  # only flags and a byte down a pipe: no lock, no logging
            self.cold = self.stopping
            self.stopping = True
            self.waker.wake()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)
        signal.signal(signal.SIGCHLD, lambda signum, frame: self.waker.wake())  # a check, plan or run ended

    def _log_stop(self) -> None:
        if (self.stopping, self.cold) == self._stop_logged:
            return
        if self.stopping and not self._stop_logged[0]:
            self.log.msg("warm_stop", detail="running jobs checkpoint and stop; a second signal stops them at once")
        if self.cold:
            self.log.msg("cold_stop")
        self._stop_logged = (self.stopping, self.cold)

    def _watch(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        waker = self.waker

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                # Reads (ours too: the scan opens specs) raise open/close events; only changes matter.
                if event.event_type in ("created", "modified", "deleted", "moved", "closed"):
                    waker.wake()

        for observer in ([] if self.poll else [Observer()]) + [PollingObserver(timeout=1.0)]:
            try:
                observer.schedule(Wake(), str(self.folder), recursive=True)
                observer.start()
                return observer
            except OSError as error:  # out of inotify watches: polling still works, and the rescan repairs
                self.log.msg("watch_fallback", error=_one_line(error), detail="polling the folder instead")
        raise AssertionError("unreachable")

    # --- helpers ------------------------------------------------------------------------------------

    def _finish(self, job: Job, state: State, failure: str | None, reason: str, *, run: RunDirectory | None = None,
                manifest: Manifest | None = None, expect=None, **fields) -> None:
        changed = self.store.update(job.id, state=state, failure=failure, reason=_one_line(reason), pid=None,
                                    finished_at=time.time(), run_dir=str(run.path) if run else job.run_dir,
                                    expect=expect, **fields)
        if not changed:
            return
        duration = round(time.time() - job.started_at, 1) if job.started_at else None
        metrics = manifest.metrics.model_dump(include={"train_loss", "eval_loss", "tokens_per_second", "steps"}) \
            if manifest else {}
        self.log.msg("job_finished", job=job.id, name=job.name, state=state.value, failure=failure, reason=reason,
                     duration_s=duration, attempts=job.attempts, run_dir=str(run.path) if run else None, **metrics)

    def _run_directory(self, job: Job) -> RunDirectory | None:
        """The run a job's plan made: the newest run directory of its plan hash."""
        where = self._plan_runs.get(job.id)
        if where is None:
            if not job.plan_path or not Path(job.plan_path).is_file():
                return None
            plan = read_plan(Path(job.plan_path))
            where = self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        runs = runs_of(*where)
        return runs[-1][0] if runs else None

    def _log_path(self, job: Job) -> Path:
        return self.state_dir / "logs" / f"{job.id}.log"

    def _say_once(self, event: str, key: str, **fields) -> None:
        if (event, key) not in self._said:
            self._said.add((event, key))
            self.log.msg(event, **fields)


def _disk_full_error(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return isinstance(error, sqlite3.Error) and "full" in str(error)


def _one_line(error: BaseException | str) -> str:
    return children.one_line(error if isinstance(error, str) else f"{type(error).__name__}: {error}")


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None
