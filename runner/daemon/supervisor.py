"""The reconcile loop: make the store agree with the folder, and the processes with the store.

    recover             the run directories first: a finished manifest is the job's outcome, never
                        a reason to run it again; then adopt live runs, resume the others
    until stopped:
        reap                    the workers' replies and the runs that ended become results
        scan the folder         new content is snapshotted and queued to be checked; deleted or
                                changed queued specs are withdrawn; moved ones followed
        honour cancellations
        release dependents      jobs whose {job: NAME} specs succeeded go on to planning
        feed the workers        one check at a time in order of arrival, one plan at a time in queue order
        start ready jobs        in queue order (runner.daemon.scheduling), through the executor
        sleep until woken       a file event, a worker's reply, a child's end, a signal, or the rescan
    stop warm (runs checkpoint and stop), or cold on a second signal

Nothing a spec controls runs in this process: its check and its plan are made by the checking and
the planning worker (runner.daemon.worker, children with limits), its run by the executor (runner.daemon.executor);
this loop reads only their bounded replies. A job is its spec's content (sha256): the bytes hashed
are the bytes snapshotted, checked, planned and run, so a file that changes later is a new job,
never a swap, and the same content anywhere in the folder is one job. Every change of a job's
state is an edge of the table in runner.daemon.states. An error while handling one job fails that
job with a one-line reason; the others go on. A disk too full to write state pauses admission
until there is room again.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import sqlite3
import time
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import structlog

from runner import hubcache
from runner.confine import Confinement
from runner.daemon import admission, children, ledger, states
from runner.daemon.admission import Allowances, Verdict
from runner.daemon.executor import Execution, Executor, Local
from runner.daemon.paths import DAEMON_FILE, disk_full
from runner.daemon.resources import Devices
from runner.daemon.scanner import Scanner, SpecFile, Watcher
from runner.daemon.scheduling import decide, queue_order
from runner.daemon.states import State, Status, Step
from runner.failures import Failure
from runner.daemon.store import Job, Store
from runner.daemon.worker import CHECK_TIMEOUT_SECONDS, STALL_SECONDS, Reply, Worker
from runner.errors import RunnerError
from runner.fsutil import write_atomically
from runner.manifest import Manifest
from runner.rundir import RunDirectory, plan_sha256, read_plan, runs_folder, runs_of
from runner.spec import modelinfo
from runner.spec.jobs import MAX_SPEC_BYTES

STOP_GRACE_SECONDS = 120
BUSY_POLL_SECONDS = 0.5
RETRY_SECONDS = 2.0
PLAN_TIMEOUT_SECONDS = 300.0
"""At most, for a plan that keeps working: a plan takes seconds (a model on the meta device, up to 20,000
rows tokenized); a stall (no CPU for worker.STALL_SECONDS) ends it far sooner."""
MAX_STALLS = 3
"""Stalled checks or plans of one job (a hung filesystem) before it is given up on; the n-th is tried
again after n times the stall window."""


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

    def wait(self, timeout: float, also: list[int | None] = ()) -> None:
        """Sleep until woken, `timeout` passes, or one of `also` (descriptors) has something to read."""
        with suppress(InterruptedError, OSError):
            select.select([self.read_end, *(fd for fd in also if fd is not None)], [], [], timeout)
        with suppress(BlockingIOError):
            while os.read(self.read_end, 4096):
                pass


class Supervisor:
    def __init__(self, folder: Path, store: Store, state_dir: Path, runs_dir: Path, *, settle: float = 0.5,
                 invalid_grace: float = 5.0, rescan: float = 30.0, poll: bool = False, max_attempts: int = 3,
                 job_timeout: float | None = None, plan_timeout: float = PLAN_TIMEOUT_SECONDS,
                 max_jobs: int | None = None, command: list[str] | None = None, devices: Devices | None = None,
                 executor: Executor | None = None, allow: Allowances = Allowances(), http: str | None = None,
                 stall: float = STALL_SECONDS, log_file=None) -> None:
        self.folder, self.store, self.state_dir, self.runs_dir = folder.resolve(), store, state_dir, runs_dir
        self.scanner = Scanner(folder, settle)
        self.watcher = Watcher(self.folder, self.scanner, poll, lambda: self.waker.wake(),
                               lambda event, **fields: self.log.msg(event, **fields))
        self.invalid_grace = invalid_grace
        self.rescan, self.poll, self.max_attempts, self.job_timeout = rescan, poll, max_attempts, job_timeout
        self.plan_timeout, self.max_jobs, self.http = plan_timeout, max_jobs, http
        command = command or children.runner_command()
        self.devices = devices if devices is not None else Devices.detect()
        self.executor = executor or Local(command)
        machine, self.stall = self.devices.describe(), stall
        self.checker = Worker(command, "check", state_dir / "logs" / "worker-check.log", machine, stall)
        self.planner = Worker(command, "plan", state_dir / "logs" / "worker-plan.log", machine, stall)
        """Checks and plans each have a worker: a plan that takes long never holds a check back."""
        self.allow = allow
        offline_copies = [copy.parent for copy in map(modelinfo.offline_copy, modelinfo.OFFLINE_COPIES) if copy]
        self.granted = tuple(dict.fromkeys(os.path.realpath(root) for root in (
            hubcache.cache_root(), runs_dir, state_dir / "snapshots", *offline_copies, *allow.read)))
        """Where every spec may read: the hub cache and the installed offline copies of hub models, the run
        root ({job: NAME} models), the snapshots of specs, and the folders the operator listed
        (runner watch --allow-read)."""
        self.runs: dict[int, Execution] = {}
        """job id -> its run"""
        self._pending: dict[str, SpecFile] = {}
        """spec sha256 -> the settled file of content waiting to be checked"""
        self._recheck_at: dict[str, float] = {}
        """spec sha256 -> when an invalid result inside the invalid grace, or a stalled check, is checked again"""
        self._replan_at: dict[int, float] = {}
        """job id -> when a job whose planning stalled is planned again"""
        self._stalls: dict[str | int, int] = {}
        """spec sha256 (a check) or job id (a plan) -> its stalls so far"""
        self._present: set[str] = set()
        self._plan_runs: dict[int, tuple[Path, str]] = {}
        """job id -> (runs folder, plan hash), read from its plan file once"""
        self._run_dir_known: set[int] = set()
        self._ended_while_full: set[int] = set()
        """job ids whose run ended while the disk was full: resumed when there is room, not failed"""
        self._said: set[tuple[str, str]] = set()
        self._described = ""
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
                     max_jobs=self.max_jobs, http=self.http,
                     allow_reward_functions=self.allow.reward_functions, allow_remote_code=self.allow.remote_code)
        self.checker.start()  # warm before the first spec lands
        self.planner.start()
        self.watcher.start()
        try:
            while not self.stopping:
                wait = self.reconcile()
                self.waker.wait(wait, [self.checker.fileno(), self.planner.fileno()])
                self._log_stop()
        finally:
            self.watcher.stop()
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
        self.watcher.keep_watching()
        settle_wait = self.scan()
        self.cancel_requested()
        if not (self.paused or self.stopping):
            self.release_dependents()
            self.feed_checker()
            self.feed_planner()
            self.start_ready()
        self._describe()
        waits = [self.rescan, settle_wait if settle_wait is not None else self.rescan]
        waits += [ready for ready in (self.checker.ready_in(), self.planner.ready_in()) if ready]
        waits += [max(0.0, at - time.monotonic()) for at in (*self._recheck_at.values(), *self._replan_at.values())]
        if self.runs or self.store.jobs(State.QUEUED, State.RECOVERING):
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
            run = self.runs.pop(job.id, None)
            if run is not None:
                run.stop(cold=True)
            self.devices.release(job.id)
            self._abandon(job.id, job.sha256)
            with suppress(Exception):
                self._finish(self.store.get(job.id), State.FAILED, Failure.RUNTIME.value, reason)

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
        settled = {spec.sha256: spec for spec in files}
        at_path = {spec.path: spec.sha256 for spec in files}
        self._pending = {}
        for job in self.store.jobs(State.QUEUED):
            if job.step == Step.CHECKING:
                if job.sha256 in settled:
                    self._pending[job.sha256] = settled[job.sha256]
                elif job.path not in self._present or at_path.get(job.path, job.sha256) != job.sha256:
                    self._forget(job)  # gone or changed before it was admitted: it never was a job
            elif job.path not in self._present and job.path.startswith(str(self.folder)):
                self._withdraw(job, "the spec file was deleted")
        return wait

    def _consider(self, spec: SpecFile) -> float | None:
        """A settled spec file: the job of its content, or a new one to check. Returns the seconds to
        wait when it must wait."""
        job = self.store.find(spec.sha256)
        if job is not None:
            self._seen_again(job, spec)
            return None
        if self.stopping:
            return None
        if self.paused:
            return RETRY_SECONDS
        if spec.oversized:
            summary = f"file is larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be"
            job = self.store.add(spec.path, spec.sha256, None, states.INVALID, reason=summary,
                                 diagnostics=[admission.diagnostic(os.path.relpath(spec.path, self.folder), "", None,
                                                                   summary, "a spec names its data files")],
                                 finished_at=time.time())
            self.log.msg("job_invalid", job=job.id, path=spec.path, reason=summary)
            return None
        self._snapshot(spec)
        job = self.store.add(spec.path, spec.sha256, None, states.CHECKING, reason="waiting to be checked",
                             author=spec.author)
        self._logged_move(job, None, states.CHECKING)
        self._supersede(spec.path, job.id)  # the content that was here has not started: it never will
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
        moved_folder = Path(job.path).parent != Path(spec.path).parent
        replan = {"plan_path": None, "estimate_bytes": None, "reason": "waiting to be planned"}
        if revive:
            changed = self._move(job, states.PLANNING, path=spec.path, withdrawn=0, finished_at=None, **replan)
        elif job.state == State.QUEUED and moved_folder:
            # relative paths resolve beside the spec: checked or planned again from its new folder
            self._abandon(job.id, job.sha256)
            if job.step in (Step.DEPENDENCY, Step.RESOURCES):
                changed = self._move(job, states.PLANNING, path=spec.path, **replan)
            else:
                changed = self.store.update(job.id, expect=State.QUEUED, path=spec.path)
        else:
            changed = self.store.update(job.id, expect=job.state, path=spec.path)
        if changed:
            self.log.msg("job_revived" if revive else "job_moved", job=job.id, name=job.name, path=spec.path,
                         was=job.path)
            if revive:
                self._supersede(spec.path, job.id)

    def _snapshot(self, spec: SpecFile) -> Path:
        """The bytes that were hashed, kept: they are what is checked, planned and run."""
        path = self._snapshot_path(spec.sha256)
        if not path.is_file() or path.stat().st_size != len(spec.content):
            write_atomically(path, spec.content)
        return path

    def _confinement(self, job: Job) -> str:
        """What a job's spec may read (runner.confine), as the worker takes it: its folder, as its author,
        and what the operator granted every spec."""
        return json.dumps(Confinement(str(self.folder), job.author, self.granted).to_json())

    def _snapshot_path(self, sha256: str) -> Path:
        return self.state_dir / "snapshots" / f"{sha256}.yaml"

    def _checked(self, sha256: str, reply: Reply) -> None:
        job = self.store.find(sha256)
        if job is None or job.status != states.CHECKING:
            return
        if reply.stalled and self._stalled(sha256):
            self._recheck_at[sha256] = time.monotonic() + self.stall * self._stalls[sha256]
            self.store.update(job.id, reason=f"its check stalled ({reply.reason}: a hung filesystem?); checked "
                                             f"again in {self.stall * self._stalls[sha256]:.0f} s")
            return
        self._stalls.pop(sha256, None)
        if reply.stalled:
            verdict = Verdict(False, reason=f"its check stalled {MAX_STALLS} times ({reply.reason}); are its data or "
                                            "model files on a hung filesystem?")
        elif reply.timed_out:
            verdict = Verdict(False, reason=f"checking this spec took longer than {CHECK_TIMEOUT_SECONDS:.0f} s "
                                            "(are its data or model files on a slow or hung filesystem?)")
        else:
            verdict = admission.verdict(reply.report if reply.ok else None, reply.reason, self.allow)
        spec = self._pending.get(sha256)
        age = (spec.stable_for if spec else 0.0) + time.monotonic() - reply.request.sent
        if not verdict.valid and age < self.invalid_grace and sha256 not in self._recheck_at:
            wait = self.invalid_grace - age  # written in parts? look again
            self._recheck_at[sha256] = time.monotonic() + wait
            self.store.update(job.id, reason=f"looks invalid; checked again in {wait:.0f} s in case it is still "
                                             "being written")
            return
        self._recheck_at.pop(sha256, None)
        self._record(job, verdict)

    def _stalled(self, key: str | int) -> bool:
        """Count a stall of a job's check or plan; whether it may be tried again."""
        self._stalls[key] = self._stalls.get(key, 0) + 1
        return self._stalls[key] < MAX_STALLS

    def _record(self, job: Job, verdict: Verdict) -> None:
        if verdict.valid:
            owner = self._name_owner(verdict.name, job.path)
            if owner is not None:
                verdict = admission.name_taken(verdict.name, job.path, owner.path, owner.id, self.folder)
        if verdict.valid:
            waiting = self._unmet(verdict.depends_on, job.path)
            to = states.DEPENDENCY if waiting else states.PLANNING
            reason = self._waiting_for(waiting, job.path) if waiting else "waiting to be planned"
            if self._move(job, to, name=verdict.name, depends_on=verdict.depends_on, priority=verdict.priority,
                          reason=reason):
                self.log.msg("job_queued", job=job.id, name=verdict.name, path=job.path,
                             depends_on=verdict.depends_on, priority=verdict.priority)
        elif self._move(job, states.INVALID, diagnostics=verdict.diagnostics, reason=_one_line(verdict.reason),
                        hint=verdict.hint, finished_at=time.time()):
            self.log.msg("job_invalid", job=job.id, path=job.path, reason=verdict.reason)

    def _name_owner(self, name: str | None, path: str) -> Job | None:
        """The spec that already has this name in the folder: a present file whose newest job bears it."""
        for job in self.store.named(name or ""):
            if job.path != path and job.path in self._present:
                newest = self.store.newest_at(job.path)
                if newest is not None and newest.name == name:
                    return job
        return None

    def _supersede(self, path: str, keep: int) -> None:
        """Changed content replaces the content that has not started yet (planning included), as soon as
        it is found: while it waits to be checked, the old content must not start."""
        for older in self.store.jobs(State.QUEUED):
            if older.path == path and older.id != keep:
                if older.step == Step.CHECKING:
                    self._forget(older)
                else:
                    self._withdraw(older, "superseded: the spec changed")

    def _withdraw(self, job: Job, reason: str) -> None:
        """Cancel a queued job because its file went away or changed; its planning, if any, stops."""
        if job.id in self.runs:
            return  # started: it runs to its end
        self._abandon(job.id, job.sha256)
        self._finish(job, State.CANCELLED, None, reason, withdrawn=1)

    def _forget(self, job: Job) -> None:
        """Content that went away before it was admitted leaves no job behind."""
        self._abandon(job.id, job.sha256)
        self._recheck_at.pop(job.sha256, None)
        if self.store.forget(job):
            self.log.msg("job_state", job=job.id, name=job.name, was=str(job.status), now=None)

    # --- the checking and planning workers ----------------------------------------------------------------------

    def feed_checker(self) -> None:
        """Give the checking worker its next check, in order of arrival (they take milliseconds to minutes)."""
        if self.checker.current is not None or self.checker.ready_in():
            return
        self.checker.start()  # again, after it died or was stopped: warm for the next request
        for job in self.store.jobs(State.QUEUED):
            spec = self._pending.get(job.sha256)
            if job.step != Step.CHECKING or spec is None or self._recheck_at.get(job.sha256, 0) > time.monotonic():
                continue
            self.checker.send("check", job.sha256, CHECK_TIMEOUT_SECONDS, snapshot=self._snapshot(spec),
                              source=job.path, cwd=self.folder, confine=self._confinement(job))
            self.store.update(job.id, reason="being checked")
            return

    def feed_planner(self) -> None:
        """Give the planning worker its next plan, in queue order."""
        if self.planner.current is not None or self.planner.ready_in():
            return
        self.planner.start()
        for job in queue_order([job for job in self.store.jobs(State.QUEUED) if job.step == Step.PLANNING]):
            if self._replan_at.get(job.id, 0) > time.monotonic():
                continue
            with self._guard(job):
                waiting = self._unmet(job.depends_on, job.path)
                if waiting:
                    self._move(job, states.DEPENDENCY, reason=self._waiting_for(waiting, job.path))
                    continue
                snapshot = self._snapshot_path(job.sha256)
                if not snapshot.is_file():
                    raise RunnerError(f"its snapshot {snapshot} is gone")
                plan_path = self.state_dir / "plans" / f"{job.id}.json"
                plan_path.parent.mkdir(parents=True, exist_ok=True)
                plan_path.unlink(missing_ok=True)
                self.planner.send("plan", job.id, self.plan_timeout, snapshot=snapshot, source=job.path,
                                  out=plan_path, runs_dir=self.runs_dir, log=self._log_path(job), cwd=self.folder,
                                  confine=self._confinement(job))
                self.store.update(job.id, reason="being planned")
                return

    def _answered(self, reply: Reply) -> None:
        request = reply.request
        if request.abandoned:
            return
        if request.kind == "check":
            self._checked(str(request.key), reply)
            return
        job = self.store.get(int(request.key))
        with self._guard(job):
            self._planned(job, reply, Path(request.body["out"]))

    def _planned(self, job: Job, reply: Reply, plan_path: Path) -> None:
        if job.status != states.PLANNING:
            return
        if reply.stalled and self._stalled(job.id):
            self._replan_at[job.id] = time.monotonic() + self.stall * self._stalls[job.id]
            self.store.update(job.id, reason=f"its planning stalled ({reply.reason}: a hung filesystem?); planned "
                                             f"again in {self.stall * self._stalls[job.id]:.0f} s")
            return
        self._stalls.pop(job.id, None)
        self._replan_at.pop(job.id, None)
        if reply.stalled:
            self._finish(job, State.FAILED, Failure.PLAN.value, f"its planning stalled {MAX_STALLS} times "
                         f"({reply.reason}); are its data or model files on a hung filesystem?")
            return
        if not reply.ok or not plan_path.is_file():
            reason = f"planning took longer than {self.plan_timeout:.0f} s" if reply.timed_out else (
                reply.reason or "the worker wrote no plan")
            self._finish(job, State.FAILED, Failure.PLAN.value, reason, hint=reply.hint)
            return
        plan = read_plan(plan_path)
        refused = self.executor.refusal(plan)
        if refused:
            self._finish(job, State.FAILED, Failure.PLAN.value, f"it can never start here: {refused[0]}",
                         hint=refused[1])
            return
        self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        estimate = sum(item.bytes for item in plan.memory.items)
        if self._move(job, states.RESOURCES, plan_path=str(plan_path), estimate_bytes=estimate,
                      devices=plan.device.count, device_type=plan.device.type, reason="planned; waiting for its turn"):
            self.log.msg("job_planned", job=job.id, name=job.name, devices=plan.device.count, device=plan.device.type,
                         estimate_gib=round(estimate / 2**30, 2))

    def _abandon(self, job_id: int, sha256: str) -> None:
        """The worker's answer for this job no longer matters (the job was withdrawn, moved or failed)."""
        for worker in (self.checker, self.planner):
            if worker.current is not None and worker.current.key in (job_id, sha256):
                worker.current.abandoned = True

    def release_dependents(self) -> None:
        for job in self.store.jobs(State.QUEUED):
            if job.step != Step.DEPENDENCY:
                continue
            with self._guard(job):
                waiting = self._unmet(job.depends_on, job.path)
                if not waiting:
                    self._move(job, states.PLANNING, reason="waiting to be planned")
                elif job.reason != self._waiting_for(waiting, job.path):
                    self.store.update(job.id, reason=self._waiting_for(waiting, job.path))

    def _waiting_for(self, names: list[str], path: str) -> str:
        """Which specs a job waits for, and which of them ended without succeeding (they are not run again
        until someone retries or changes them: the job says so rather than waiting in silence)."""
        folder = str(Path(path).parent)
        ended = []
        for name in names:
            newest = next((job for job in reversed(self.store.named(name)) if str(Path(job.path).parent) == folder),
                          None)
            if newest is not None and newest.state.terminal:
                how = {"invalid": "is invalid", "cancelled": "was cancelled"}.get(newest.state.value, newest.state.value)
                how += f" ({newest.failure})" if newest.failure else ""
                ended.append(f"{name} {how}: runner retry {name}, or change its spec")
        return f"waiting for {', '.join(names)} to succeed" + ("; " + "; ".join(ended) if ended else "")

    def _unmet(self, names: list[str], path: str) -> list[str]:
        """The specs among `names` (in the folder of `path`) that have not succeeded yet."""
        return [name for name in names if self.store.latest_succeeded(name, str(Path(path).parent)) is None]

    # --- actual state: runs -----------------------------------------------------------------------

    def reap(self) -> None:
        for worker in (self.checker, self.planner):
            reply = worker.poll()
            if reply is not None:
                self._answered(reply)
        for job_id, run in list(self.runs.items()):
            code = run.exit_code()
            job = self.store.get(job_id)
            with self._guard(job):
                if code is None:
                    self._enforce_timeout(run)
                    self._note_run_directory(job)
                    self._note_detail(job, run)
                    continue
                if self.paused:  # an end the full disk may have caused (a write the run could not make)
                    self._ended_while_full.add(job_id)
                self._ran(job, code, run)
                self.devices.release(job_id)
                del self.runs[job_id]  # only once its end is recorded: a full disk retries it
                self._ended_while_full.discard(job_id)

    def _ran(self, job: Job, code: int, run: Execution) -> None:
        if job.state != State.RUNNING:  # cancelled by a person between the start and its record
            self.log.msg("run_ended", job=job.id, name=job.name, state=job.state.value, exit_code=code)
            return
        run_dir = self._run_directory(job)
        manifest = run_dir.read_manifest() if run_dir else None
        recorded = manifest is not None and manifest.state in ledger.FINISHED
        if job.cancel_requested:
            self._finish(job, State.CANCELLED, None, "cancelled while running", run=run_dir)
        elif not recorded and self.stopping:
            if self._move(job, states.RECOVERING, pid=None, run_dir=str(run_dir.path) if run_dir else None,
                          reason="the daemon stopped; the run resumes from its checkpoint at the next start"):
                self.log.msg("job_paused", job=job.id, name=job.name)
        elif not recorded and run.stop_sent is not None:
            self._finish(job, State.FAILED, Failure.TIMEOUT.value,
                         f"ran longer than the job timeout ({self.job_timeout:.0f} s)", run=run_dir)
        elif not recorded and code == -1:
            self._vanished(job, "its process vanished without recording an end")
        elif not recorded and code > 0 and job.id in self._ended_while_full:
            self._vanished(job, "it ended without recording an end while the disk was full")
        else:
            state, failure, reason = children.run_outcome(code, manifest, getattr(run, "log_path", None))
            self._finish(job, state, failure, reason, run=run_dir, manifest=manifest,
                         hint=manifest.error.hint if manifest and manifest.error else None)

    def _note_run_directory(self, job: Job) -> None:
        """Record where a running job writes, once it exists, so `runner status` can show progress."""
        if job.id in self._run_dir_known:
            return
        run_dir = self._run_directory(job)
        if run_dir is not None:
            self.store.update(job.id, run_dir=str(run_dir.path))
            self._run_dir_known.add(job.id)

    def _note_detail(self, job: Job, run: Execution) -> None:
        """Where a run is, as its reason, when its executor knows more than "running" (a Slurm job's queue)."""
        detail = getattr(run, "detail", None)
        if detail and detail != job.reason:
            self.store.update(job.id, expect=State.RUNNING, reason=detail)

    def _enforce_timeout(self, run: Execution) -> None:
        if self.job_timeout is None:
            return
        if time.monotonic() - run.started > self.job_timeout and run.stop_sent is None:
            run.stop(cold=False)
            run.stop_sent = time.monotonic()
        elif run.stop_sent is not None and time.monotonic() - run.stop_sent > STOP_GRACE_SECONDS:
            run.stop(cold=True)

    def cancel_requested(self) -> None:
        for job in self.store.jobs(State.RUNNING):
            run = self.runs.get(job.id)
            if job.cancel_requested and run is not None and run.stop_sent is None:
                run.stop(cold=False)
                run.stop_sent = time.monotonic()
                self.log.msg("job_cancelling", job=job.id, name=job.name)

    def start_ready(self) -> None:
        ready = []
        for job in self.store.jobs(State.RECOVERING, State.QUEUED):
            if job.id in self.runs or job.step not in (None, Step.RESOURCES) or not job.plan_path \
                    or job.estimate_bytes is None:
                continue
            with self._guard(job):
                if job.state == State.RECOVERING and self._record_finished(job, "its run had finished"):
                    continue
                ready.append(job)
        if any(job.device_type == "cuda" for job in ready):
            self.devices.read_usage({job_id: run.process_group for job_id, run in self.runs.items()
                                     if run.process_group is not None})
        for decision in decide(ready, self.devices, len(self.runs), self.max_jobs):
            job = decision.job
            with self._guard(job):
                if decision.never:
                    self._finish(job, State.FAILED, Failure.PLAN.value, f"it can never start here: {decision.never}",
                                 hint="plan it for this box's GPUs (hardware.gpus, hardware.max_memory_gb), or "
                                      "run it elsewhere")
                elif decision.gpus is None:
                    if job.reason != decision.waits:
                        self.store.update(job.id, reason=decision.waits)
                else:
                    self._start(job, decision.gpus)

    def _start(self, job: Job, gpus: list[int]) -> None:
        run = self.executor.start(job, Path(job.plan_path), self.runs_dir, gpus, self._log_path(job))
        self.runs[job.id] = run
        resumed = job.state == State.RECOVERING
        if not self._move(job, states.RUNNING, **self.executor.identity(run), gpus=",".join(map(str, gpus)),
                          attempts=job.attempts + 1, started_at=time.time(),
                          reason="resuming from the last checkpoint" if resumed else "running"):
            run.stop(cold=True)  # a person cancelled it meanwhile; its end is reaped like any other
            return
        self.log.msg("job_started", job=job.id, name=job.name, **self.executor.identity(run), gpus=gpus,
                     attempt=job.attempts + 1, resumed=resumed)

    # --- recovery and shutdown --------------------------------------------------------------------

    def recover(self) -> None:
        """Make the store say what the run directories say, then handle rows left `running` by a
        daemon that died: adopt live runs, record runs that finished meanwhile, resume the others."""
        self._import_runs()
        for job in self.store.jobs(State.RUNNING):
            with self._guard(job):
                run = self.executor.adopt(job, self._log_path(job))
                if run is not None:
                    self.runs[job.id] = run
                    if job.estimate_bytes is not None:
                        self.devices.reserve(job.id, [int(gpu) for gpu in (job.gpus or "").split(",") if gpu],
                                             job.estimate_bytes)
                    self.log.msg("job_adopted", job=job.id, name=job.name, **self.executor.identity(run))
                elif not self._record_finished(job, "it finished while the daemon was down"):
                    self._vanished(job, "its process vanished while the daemon was down")

    def _import_runs(self) -> None:
        """Runs the store does not know (it was lost, emptied, or moved aside) become rows again: one per
        spec content, as its succeeded run says, else as its newest run says."""
        known = {job.sha256 for job in self.store.jobs()}
        found: dict[str, tuple[RunDirectory, Manifest]] = {}
        for run, manifest in ledger.daemon_runs(self.runs_dir, self.state_dir):  # oldest first
            kept = found.get(manifest.spec_sha256)
            if manifest.spec_sha256 not in known and (kept is None or kept[1].state != "succeeded"):
                found[manifest.spec_sha256] = (run, manifest)
        for sha256, (run, manifest) in found.items():
            recorded = ledger.outcome(manifest)
            plan = manifest.plan
            fields = dict(run_dir=str(run.path), attempts=len(manifest.attempts),
                          started_at=_epoch(manifest.timings.started_at), priority=plan.spec.get("priority") or 0)
            if recorded is not None:
                status = Status(recorded.state)
                fields.update(failure=recorded.failure, finished_at=time.time(),
                              reason=f"{_one_line(recorded.reason)} (recorded from its run directory)")
            else:
                status = states.RECOVERING
                fields.update(plan_path=str(run.plan), estimate_bytes=sum(item.bytes for item in plan.memory.items),
                              devices=plan.device.count, device_type=plan.device.type,
                              reason="recorded from its run directory; resuming")
            job = self.store.add(plan.inputs.spec_source or plan.inputs.spec_path, sha256, manifest.name, status,
                                 **fields)
            self._logged_move(job, None, status)
        if found:
            self.log.msg("store_rebuilt", runs=len(found),
                         detail="jobs recorded from run directories the store did not know")

    def _record_finished(self, job: Job, why: str) -> bool:
        """Record a job's outcome from its run directory when its manifest says it finished (in the
        attempt the daemon started): it is never started again."""
        run_dir = self._run_directory(job)
        manifest = run_dir.read_manifest() if run_dir else None
        recorded = ledger.outcome(manifest) if manifest else None
        if recorded is None or not ledger.reflects_attempt(manifest, job.pid, job.started_at):
            return False
        self._finish(job, recorded.state, recorded.failure, f"{_one_line(recorded.reason)} ({why})", run=run_dir,
                     manifest=manifest)
        return True

    def _vanished(self, job: Job, why: str) -> None:
        """Resume from the last checkpoint, a bounded number of times."""
        if job.attempts >= self.max_attempts:
            self._finish(job, State.FAILED, Failure.KILLED.value, f"{why}, {job.attempts} attempts: giving up")
        elif self._move(job, states.RECOVERING, pid=None, reason=f"{why}; resuming"):
            self.log.msg("job_recovering", job=job.id, name=job.name, attempts=job.attempts)

    def shutdown(self) -> None:
        self.checker.stop()
        self.planner.stop()
        for run in self.runs.values():
            run.stop(cold=self.cold)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(run.exit_code() is None for run in self.runs.values()):
            self._log_stop()
            if self.cold or time.monotonic() > deadline:
                for run in self.runs.values():
                    run.stop(cold=True)
            time.sleep(0.2)
        count = len(self.runs)
        self._pass("shutdown", self.reap)
        self.log.msg("children_stopped", runs=count)

    def _on_signals(self) -> None:
        def handler(signum, frame):  # only flags and a byte down a pipe: no lock, no logging
            self.cold = self.stopping
            self.stopping = True
            self.waker.wake()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)
        signal.signal(signal.SIGCHLD, lambda signum, frame: self.waker.wake())  # a run or the worker ended
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.waker.wake())  # runner retry/cancel (daemon.wake)

    def _log_stop(self) -> None:
        if (self.stopping, self.cold) == self._stop_logged:
            return
        if self.stopping and not self._stop_logged[0]:
            self.log.msg("warm_stop", detail="running jobs checkpoint and stop; a second signal stops them at once")
        if self.cold:
            self.log.msg("cold_stop")
        self._stop_logged = (self.stopping, self.cold)

    # --- helpers ------------------------------------------------------------------------------------

    def _move(self, job: Job, to: Status, **fields) -> bool:
        """A change of state (an edge of runner.daemon.states), logged."""
        moved = self.store.move(job, to, **fields)
        if moved:
            self._logged_move(job, job.status, to, fields.get("name"))
        return moved

    def _logged_move(self, job: Job, was: Status | None, now: Status, name: str | None = None) -> None:
        self.log.msg("job_state", job=job.id, name=name or job.name, was=str(was) if was else None, now=str(now))

    def _finish(self, job: Job, state: State, failure: str | None, reason: str, *, run: RunDirectory | None = None,
                manifest: Manifest | None = None, hint: str | None = None, **fields) -> None:
        if not self._move(job, Status(state), failure=failure, reason=_one_line(reason), hint=hint, pid=None,
                          finished_at=time.time(), run_dir=str(run.path) if run else job.run_dir, **fields):
            return
        duration = round(time.time() - job.started_at, 1) if job.started_at else None
        metrics = manifest.metrics.model_dump(include={"train_loss", "eval_loss", "tokens_per_second", "steps"}) \
            if manifest else {}
        self.log.msg("job_finished", job=job.id, name=job.name, state=state.value, failure=failure, reason=reason,
                     duration_s=duration, attempts=job.attempts, run_dir=str(run.path) if run else None, **metrics)

    def _run_directory(self, job: Job) -> RunDirectory | None:
        """The run a job's plan made: the newest run directory of its plan hash and its spec content
        (two jobs never share a run, even where their plans would hash alike)."""
        where = self._plan_runs.get(job.id)
        if where is None:
            if not job.plan_path or not Path(job.plan_path).is_file():
                return None
            plan = read_plan(Path(job.plan_path))
            where = self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        runs = [run for run, manifest in runs_of(*where) if manifest.spec_sha256 == job.sha256]
        return runs[-1] if runs else None

    def _describe(self) -> None:
        """<state dir>/daemon.json: what `runner status` and the page say about the daemon itself (its
        folder, run root, GPUs and what they hold), rewritten when it changes."""
        described = json.dumps({
            "pid": os.getpid(), "folder": str(self.folder), "state_dir": str(self.state_dir),
            "runs_dir": str(self.runs_dir), "http": self.http, "max_jobs": self.max_jobs,
            "executor": type(self.executor).__name__.lower(), "paused": self.paused,
            "gpus": [gpu.to_json() for gpu in self.devices.gpus],
            "cpu_job": self.devices.cpu_job}, indent=2)
        if described != self._described:
            write_atomically(self.state_dir / DAEMON_FILE, described + "\n")
            self._described = described

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
