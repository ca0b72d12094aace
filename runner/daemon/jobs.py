"""The jobs as the parts of the loop change them (runner.daemon.supervisor): the store, whose every change of
a job's state is an edge of the table (runner.daemon.states) and goes to the daemon's event log, and the
guard that makes an error while handling one job that job's failure alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

from runner.daemon import children
from runner.daemon.paths import disk_full_error
from runner.daemon.states import State, Status
from runner.daemon.store import Job, Store
from runner.failures import Failure
from runner.manifest import Manifest
from runner.rundir import RunDirectory


class Jobs:
    def __init__(self, store: Store, log) -> None:
        self.store = store
        """Read it, and change fields other than the state (Store.update); a state changes here."""
        self.log = log
        """The daemon's event log (structlog: `log.msg(event, **fields)`)."""
        self.releases: tuple[Callable[[Job], None], ...] = ()
        """What a job the daemon gives up on lets go of (its run and devices, the workers' answers)."""

    def move(self, job: Job, to: Status, **fields) -> bool:
        """A change of state (an edge of runner.daemon.states), logged; False when the job had moved meanwhile."""
        moved = self.store.move(job, to, **fields)
        if moved:
            self.logged(job, job.status, to, fields.get("name"))
        return moved

    def start(self, job: Job, executor: str, handle: dict, **fields) -> bool:
        """A start of the job's run (an execution of `executor`): the move to running, logged."""
        started = self.store.start(job, executor, handle, **fields)
        if started:
            self.logged(job, job.status, Status(State.RUNNING))
        return started

    def logged(self, job: Job, was: Status | None, now: Status | None, name: str | None = None) -> None:
        """Log a change of state made elsewhere (a row added or forgotten)."""
        self.log.msg("job_state", job=job.id, name=name or job.name, was=str(was) if was else None,
                     now=str(now) if now else None)

    def finish(self, job: Job, state: State, failure: str | None, reason: str, *, run: RunDirectory | None = None,
               manifest: Manifest | None = None, hint: str | None = None, **fields) -> None:
        """The job's end: a terminal state with its failure kind, one line of reason, and what its run says."""
        if not self.move(job, Status(state), failure=failure, reason=one_line(reason), hint=hint,
                         finished_at=time.time(), run_dir=str(run.path) if run else job.run_dir, **fields):
            return
        duration = round(time.time() - job.started_at, 1) if job.started_at else None
        metrics = manifest.metrics.model_dump(include={"train_loss", "eval_loss", "tokens_per_second", "steps"}) \
            if manifest else {}
        self.log.msg("job_finished", job=job.id, name=job.name, state=state.value, failure=failure, reason=reason,
                     duration_s=duration, attempts=job.attempts, run_dir=str(run.path) if run else None, **metrics)

    @contextmanager
    def guard(self, job: Job):
        """Handle one job: an error fails that job (one line) and leaves the others alone. A full disk is
        no job's fault: it goes on up (admission pauses)."""
        try:
            yield
        except Exception as error:
            if disk_full_error(error):
                raise
            reason = f"the daemon could not handle this job: {one_line(error)}"
            self.log.msg("job_error", job=job.id, name=job.name, error=reason)
            for release in self.releases:
                release(job)
            with suppress(Exception):
                self.finish(self.store.get(job.id), State.FAILED, Failure.RUNTIME.value, reason)

    def unmet(self, names: list[str], path: str) -> list[str]:
        """The specs among `names` (in the folder of `path`) that have not succeeded yet."""
        return [name for name in names if self.store.latest_succeeded(name, str(Path(path).parent)) is None]

    def waiting_for(self, names: list[str], path: str) -> str:
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


def one_line(error: BaseException | str) -> str:
    """A reason as the store keeps it: one line; an exception with its type."""
    return children.one_line(error if isinstance(error, str) else f"{type(error).__name__}: {error}")
