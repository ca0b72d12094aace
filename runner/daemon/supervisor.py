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

The loop's parts each have a module: intake (the folder, and the checks that admit its specs:
runner.daemon.intake), planning (dependencies and plans: runner.daemon.planning), runs (starts, ends,
cancellations and timeouts: runner.daemon.running) and recovery (runner.daemon.recovery). They change
jobs only through runner.daemon.jobs, and read one frozen configuration (runner.daemon.config).

Nothing a spec controls runs in this process: its check and its plan are made by the checking and
the planning worker (runner.daemon.worker, children with limits), its run by the executor (runner.daemon.executor);
this loop reads only their bounded replies. Every change of a job's state is an edge of the table in
runner.daemon.states. An error while handling one job fails that job with a one-line reason; the others
go on. A disk too full to write state pauses admission until there is room again.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from contextlib import suppress
from pathlib import Path

import structlog

from runner.daemon.config import DaemonConfig
from runner.daemon.intake import RETRY_SECONDS, Intake
from runner.daemon.jobs import Jobs, one_line
from runner.daemon.ledger import JobRuns
from runner.daemon.paths import DAEMON_FILE, disk_full, disk_full_error
from runner.daemon.planning import Planning
from runner.daemon.recovery import Recovery
from runner.daemon.running import STOP_GRACE_SECONDS, Running
from runner.daemon.scanner import Watcher
from runner.daemon.states import State
from runner.daemon.store import Store
from runner.daemon.worker import Reply, Workers
from runner.fsutil import write_atomically

BUSY_POLL_SECONDS = 0.5


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
    def __init__(self, config: DaemonConfig, store: Store, log_file=None) -> None:
        self.config, self.store = config, store
        self.log = structlog.wrap_logger(
            structlog.PrintLogger(log_file), processors=[structlog.processors.TimeStamper(fmt="iso", utc=True),
                                                         structlog.processors.JSONRenderer()])
        self.devices = config.executor.devices()
        self.jobs = Jobs(store, self.log)
        self.workers = Workers.for_daemon(list(config.command), config.state_dir / "logs", self.devices.describe(),
                                          config.stall)
        job_runs = JobRuns(config.runs_dir)
        self.running = Running(config, self.jobs, self.devices, job_runs)
        self.intake = Intake(config, self.jobs, self.workers, self.running.runs)
        self.planning = Planning(config, self.jobs, self.workers, job_runs)
        self.recovery = Recovery(config, self.jobs, self.running)
        self.jobs.releases = (self.running.drop, self.workers.abandon)
        self.waker = Waker()
        self.watcher = Watcher(config.folder, self.intake.scanner, config.poll, self.waker.wake,
                               lambda event, **fields: self.log.msg(event, **fields))
        self._described = ""
        self.paused: str | None = None
        self.recovered = False
        self.stopping = False
        self.cold = False
        self._stop_logged = (False, False)

    # --- the loop --------------------------------------------------------------------------------

    def serve(self) -> int:
        self._on_signals()
        config = self.config
        self.log.msg("daemon_started", folder=str(config.folder), state_dir=str(config.state_dir), pid=os.getpid(),
                     runs_dir=str(config.runs_dir), gpus=[gpu.index for gpu in self.devices.gpus],
                     max_jobs=config.max_jobs, http=config.http, allow_reward_functions=config.allow.reward_functions,
                     allow_remote_code=config.allow.remote_code)
        self.workers.start()  # warm before the first spec lands
        self.watcher.start()
        try:
            while not self.stopping:
                wait = self.reconcile()
                self.waker.wait(wait, self.workers.filenos())
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
            self.recovery.recover()
            self.recovered = True
        self._pause_when_full(disk_full(self.config.state_dir))
        self.reap()
        self.watcher.keep_watching()
        settle_wait = self.intake.scan(self.paused, self.stopping)
        self.running.cancel_requested()
        if not (self.paused or self.stopping):
            self.planning.release_dependents()
            self.intake.feed_checker()
            self.planning.feed_planner()
            self.running.start_ready()
        self._describe()
        waits = [self.config.rescan, settle_wait if settle_wait is not None else self.config.rescan]
        waits += [ready for ready in self.workers.ready_in() if ready]
        waits += [max(0.0, at - time.monotonic())
                  for at in (*self.intake.recheck_at.values(), *self.planning.replan_at.values())]
        if self.running.runs or self.store.jobs(State.QUEUED, State.RECOVERING):
            waits.append(BUSY_POLL_SECONDS)
        return max(0.05, min(waits))

    def reap(self) -> None:
        """The workers' replies and the runs that ended become results."""
        for reply in self.workers.replies():
            self._answered(reply)
        self.running.reap(self.paused, self.stopping)

    def _answered(self, reply: Reply) -> None:
        request = reply.request
        if request.abandoned:
            return
        if request.kind == "check":
            self.intake.checked(str(request.key), reply)
            return
        job = self.store.get(int(request.key))
        with self.jobs.guard(job):
            self.planning.planned(job, reply, Path(request.body["out"]))

    def _pass(self, what: str, step):
        """Run one step of the loop; whatever it raises is logged and the loop goes on (a full disk
        pauses admission). Returns the step's result, or False when it failed."""
        try:
            return step()
        except Exception as error:  # the daemon outlives any one pass; the next pass tries again
            if disk_full_error(error):
                self._pause_when_full(f"the disk is full ({one_line(error)})")
            else:
                self.log.msg(f"{what}_failed", error=one_line(error))
            return False

    def _pause_when_full(self, why: str | None) -> None:
        if why != self.paused:
            self.log.msg("admission_paused" if why else "admission_resumed", reason=why,
                         state_dir=str(self.config.state_dir))
        self.paused = why

    def _describe(self) -> None:
        """<state dir>/daemon.json: what `runner status` and the page say about the daemon itself (its
        folder, run root, GPUs and what they hold), rewritten when it changes."""
        config = self.config
        described = json.dumps({
            "pid": os.getpid(), "folder": str(config.folder), "state_dir": str(config.state_dir),
            "runs_dir": str(config.runs_dir), "http": config.http, "max_jobs": config.max_jobs,
            "executor": config.executor.name, "paused": self.paused,
            "gpus": [gpu.to_json() for gpu in self.devices.gpus],
            "cpu_job": self.devices.cpu_job}, indent=2)
        if described != self._described:
            write_atomically(config.state_dir / DAEMON_FILE, described + "\n")
            self._described = described

    # --- stopping --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the workers and the runs (warm: they checkpoint; cold at a second signal, or after the grace),
        and record how the runs ended."""
        self.workers.stop()
        self.running.stop(cold=self.cold)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.running.alive():
            self._log_stop()
            if self.cold or time.monotonic() > deadline:
                self.running.stop(cold=True)
            time.sleep(0.2)
        count = len(self.running.runs)
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
