"""The reconcile loop: make the store agree with the folder, and the processes with the store.

    recover what a previous daemon left running
    until stopped:
        scan the folder         new or changed specs are validated and queued; deleted ones cancel
        reap children           finished plans and runs become results
        honour cancellations
        plan queued jobs        a `runner plan` child: the memory estimate decides the devices
        start ready jobs        a `runner run --plan` child per job, in its own process group
        sleep until woken       a file event, a child's end, a signal, or the periodic rescan
    stop warm (children checkpoint and stop), or cold on a second signal

File events only wake the loop; every pass rescans, so a missed event costs latency,
never a job. Each spec content runs at most once: rows are keyed by (path, sha256).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import structlog

from runner.daemon import children
from runner.daemon.children import Child
from runner.daemon.resources import Devices
from runner.daemon.scanner import Scanner, SpecFile
from runner.daemon.store import Failure, Job, State, Store
from runner.manifest import Manifest
from runner.plan.models import Plan
from runner.rundir import RunDirectory, plan_sha256, runs_folder, runs_of
from runner.spec.check import check_spec

STOP_GRACE_SECONDS = 120
BUSY_POLL_SECONDS = 0.5


class Supervisor:
    def __init__(self, folder: Path, store: Store, state_dir: Path, runs_dir: Path, *, settle: float = 0.5,
                 invalid_grace: float = 5.0, rescan: float = 30.0, poll: bool = False, max_attempts: int = 3,
                 job_timeout: float | None = None, command: list[str] | None = None, devices: Devices | None = None,
                 log_file=None) -> None:
        self.folder, self.store, self.state_dir, self.runs_dir = folder.resolve(), store, state_dir, runs_dir
        self.scanner = Scanner(folder, settle)
        self.invalid_grace = invalid_grace
        self.rescan, self.poll, self.max_attempts, self.job_timeout = rescan, poll, max_attempts, job_timeout
        self.command = command or children.runner_command()
        self.devices = devices if devices is not None else Devices.detect()
        self.children: dict[int, Child] = {}
        self._plan_runs: dict[int, tuple[Path, str]] = {}
        """job id -> (runs folder, plan hash), read from its plan file once"""
        self.wake = threading.Event()
        self.stopping = False
        self.cold = False
        self.log = structlog.wrap_logger(
            structlog.PrintLogger(log_file), processors=[structlog.processors.TimeStamper(fmt="iso", utc=True),
                                                         structlog.processors.JSONRenderer()])

    # --- the loop --------------------------------------------------------------------------------

    def serve(self) -> int:
        self._on_signals()
        self.log.msg("daemon_started", folder=str(self.folder), state_dir=str(self.state_dir), pid=os.getpid(),
                     runs_dir=str(self.runs_dir), gpus=[gpu.index for gpu in self.devices.gpus])
        self.recover()
        observer = self._watch()
        try:
            while not self.stopping:
                wait = self.reconcile()
                self.wake.wait(timeout=wait)
                self.wake.clear()
        finally:
            observer.stop()
            self.shutdown()
        self.log.msg("daemon_stopped", cold=self.cold)
        return 0

    def reconcile(self) -> float:
        """One pass; returns how long the loop may sleep before the next."""
        settle_wait = self.scan()
        self.reap()
        self.cancel_requested()
        self.plan_queued()
        self.start_ready()
        waits = [self.rescan, settle_wait if settle_wait is not None else self.rescan]
        if self.children or self.store.jobs(State.QUEUED, State.RECOVERING):
            waits.append(BUSY_POLL_SECONDS)
        return max(0.05, min(waits))

    # --- desired state: the folder -----------------------------------------------------------------

    def scan(self) -> float | None:
        files, present, wait = self.scanner.scan()
        for spec in files:
            if self.store.find(spec.path, spec.sha256) is None:
                retry_in = self.admit(spec)
                if retry_in is not None:
                    wait = retry_in if wait is None else min(wait, retry_in)
        for job in self.store.jobs(State.QUEUED, State.INVALID):
            if job.path not in present and job.path.startswith(str(self.folder)):
                if job.state == State.QUEUED and job.id not in self.children:
                    self._finish(job, State.CANCELLED, None, "the spec file was deleted", expect=State.QUEUED)
        return wait

    def admit(self, spec: SpecFile) -> float | None:
        """Queue a settled spec, or record it as invalid. An invalid one is given `invalid_grace`
        seconds more first: a spec written in parts is usually invalid until the last part lands.
        Returns the seconds to wait when it is deferred."""
        checked = check_spec(Path(spec.path))
        if checked.errors and spec.stable_for < self.invalid_grace:
            return self.invalid_grace - spec.stable_for
        for older in self.store.jobs(State.QUEUED):
            if older.path == spec.path and older.id not in self.children:
                self._finish(older, State.CANCELLED, None, "superseded: the spec changed", expect=State.QUEUED)
        if checked.errors:
            diagnostics = [d.to_json() for d in checked.diagnostics]
            job = self.store.add(spec.path, spec.sha256, None, State.INVALID, diagnostics=diagnostics,
                                 reason=f"{len(checked.errors)} error(s), the first: {_where(checked.errors[0])}")
            self.log.msg("job_invalid", job=job.id, path=spec.path, errors=len(checked.errors))
            return None
        depends = [checked.spec.base_model.job] if checked.spec.base_model.job else []
        section = checked.spec.method_section()
        reward = getattr(section, "reward", None)
        if reward is not None and getattr(reward, "model", None) is not None and reward.model.job:
            depends.append(reward.model.job)
        job = self.store.add(spec.path, spec.sha256, checked.spec.name, State.QUEUED, depends_on=depends,
                             reason="waiting to be planned")
        self.log.msg("job_queued", job=job.id, name=job.name, path=spec.path, depends_on=depends)
        return None

    # --- actual state: children ---------------------------------------------------------------------

    def reap(self) -> None:
        for job_id, child in list(self.children.items()):
            code = child.exit_code()
            if code is None:
                self._enforce_timeout(child)
                self._note_run_directory(child)
                continue
            del self.children[job_id]
            job = self.store.get(job_id)
            if child.stage == "plan":
                self._planned(job, code, child)
            else:
                self.devices.release(job_id)
                self._ran(job, code, child)

    def _planned(self, job: Job, code: int, child: Child) -> None:
        if self.stopping and code != 0:  # stopped by the shutdown: plan it again at the next start
            self.store.update(job.id, plan_path=None, reason="waiting to be planned")
            return
        if code != 0 or not job.plan_path or not Path(job.plan_path).is_file():
            self._finish(job, State.FAILED, Failure.PLAN.value, children.log_tail(child.log_path, 6) or
                         f"runner plan exited with code {code}")
            return
        plan = Plan.model_validate_json(Path(job.plan_path).read_text())
        self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        estimate = sum(item.bytes for item in plan.memory.items)
        self.store.update(job.id, estimate_bytes=estimate, devices=plan.device.count, device_type=plan.device.type,
                          reason="planned; waiting for a device")
        self.log.msg("job_planned", job=job.id, name=job.name, devices=plan.device.count, device=plan.device.type,
                     estimate_gib=round(estimate / 2**30, 2))

    def _ran(self, job: Job, code: int, child: Child) -> None:
        run = self._run_directory(job)
        manifest = run.read_manifest() if run else None
        recorded = manifest is not None and manifest.state in ("succeeded", "failed")
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
        if child.stage != "run" or self.job_timeout is None:
            return
        elapsed = time.monotonic() - child.started
        if elapsed > self.job_timeout and child.stop_sent is None:
            child.signal(signal.SIGTERM)
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
        if any(child.stage == "plan" for child in self.children.values()):
            return  # one plan at a time: planning loads a tokenizer and imports torch
        for job in self.store.jobs(State.QUEUED):
            if job.plan_path or job.id in self.children:
                continue
            waiting = [name for name in job.depends_on
                       if self.store.latest_succeeded(name, str(Path(job.path).parent)) is None]
            if waiting:
                self.store.update(job.id, reason=f"waiting for {', '.join(waiting)} to succeed")
                continue
            plan_path = self.state_dir / "plans" / f"{job.id}.json"
            plan_path.parent.mkdir(parents=True, exist_ok=True)
            command = [*self.command, "plan", job.path, "--out", str(plan_path), "--runs-dir", str(self.runs_dir)]
            self.children[job.id] = children.launch(job.id, "plan", command, self._log_path(job), dict(os.environ))
            self.store.update(job.id, plan_path=str(plan_path), reason="planning")
            return

    def start_ready(self) -> None:
        if self.stopping:
            return
        for job in self.store.jobs(State.RECOVERING, State.QUEUED):
            if job.id in self.children or not job.plan_path or job.estimate_bytes is None:
                continue
            gpus = self.devices.reserve(job.id, job.device_type or "cpu", job.devices or 1, job.estimate_bytes)
            if gpus is None:
                continue
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
        """Rows left `running` by a daemon that died: adopt live children, resume the others."""
        for job in self.store.jobs(State.RUNNING):
            if job.pid and children.process_start_time(job.pid) == job.pid_start:
                self.children[job.id] = Child(job.id, "run", job.pid, log_path=self._log_path(job))
                if job.estimate_bytes is not None:
                    self.devices.reserve(job.id, job.device_type or "cpu", job.devices or 1, job.estimate_bytes)
                self.log.msg("job_adopted", job=job.id, name=job.name, pid=job.pid)
            else:
                self._vanished(job, "its process vanished while the daemon was down")
        for job in self.store.jobs(State.QUEUED):
            if job.plan_path and job.estimate_bytes is None:  # its plan child died with the daemon
                self.store.update(job.id, plan_path=None, reason="waiting to be planned")

    def _vanished(self, job: Job, why: str) -> None:
        """Resume from the last checkpoint, a bounded number of times."""
        if job.attempts >= self.max_attempts:
            self._finish(job, State.FAILED, Failure.KILLED.value, f"{why}, {job.attempts} attempts: giving up")
            return
        self.store.update(job.id, state=State.RECOVERING, pid=None, reason=f"{why}; resuming")
        self.log.msg("job_recovering", job=job.id, name=job.name, attempts=job.attempts)

    def shutdown(self) -> None:
        runs = [child for child in self.children.values() if child.stage == "run"]
        for child in self.children.values():
            child.signal(signal.SIGKILL if child.stage == "plan" or self.cold else signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(child.exit_code() is None for child in self.children.values()):
            if self.cold or time.monotonic() > deadline:
                for child in self.children.values():
                    child.signal(signal.SIGKILL)
            time.sleep(0.2)
        self.reap()
        self.log.msg("children_stopped", runs=len(runs))

    def _on_signals(self) -> None:
        def handler(signum, frame):
            if self.stopping:
                self.cold = True
                self.log.msg("cold_stop", signal=signal.Signals(signum).name)
            else:
                self.stopping = True
                self.log.msg("warm_stop", signal=signal.Signals(signum).name,
                             detail="running jobs checkpoint and stop; a second signal stops them at once")
            self.wake.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    def _watch(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        wake = self.wake

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                # Reads (ours too: the scan opens specs) raise open/close events; only changes matter.
                if event.event_type in ("created", "modified", "deleted", "moved", "closed"):
                    wake.set()

        observer = PollingObserver(timeout=1.0) if self.poll else Observer()
        observer.schedule(Wake(), str(self.folder), recursive=True)
        observer.start()
        return observer

    # --- helpers ------------------------------------------------------------------------------------

    def _finish(self, job: Job, state: State, failure: str | None, reason: str, *, run: RunDirectory | None = None,
                manifest: Manifest | None = None, expect=None) -> None:
        changed = self.store.update(job.id, state=state, failure=failure, reason=reason, pid=None,
                                    finished_at=time.time(), run_dir=str(run.path) if run else job.run_dir,
                                    expect=expect)
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
            plan = Plan.model_validate_json(Path(job.plan_path).read_text())
            where = self._plan_runs[job.id] = (runs_folder(self.runs_dir, plan), plan_sha256(plan))
        runs = runs_of(*where)
        return runs[-1][0] if runs else None

    def _log_path(self, job: Job) -> Path:
        return self.state_dir / "logs" / f"{job.id}.log"


def _where(diagnostic) -> str:
    line = f":{diagnostic.span.line}" if diagnostic.span else ""
    field = f" {diagnostic.path}:" if diagnostic.path else ""
    return f"{Path(diagnostic.file).name}{line}:{field} {diagnostic.summary}"
