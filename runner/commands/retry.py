"""`runner retry NAME`: run a failed or cancelled job again (an invalid one is checked again)."""

from __future__ import annotations

from runner.errors import ExitCode, RunnerError


def retry(name: str, state_dir: str | None) -> int:
    from runner.daemon.paths import state_directory
    from runner.daemon.store import State, Store

    store = Store.existing(state_directory(state_dir), writable=True)
    job = store.latest(name)
    if job is None:
        raise RunnerError(f"no job named {name}", "see: runner status")
    if job.state == State.INVALID:
        store.connection.execute("DELETE FROM jobs WHERE id = ? AND state = 'invalid'", (job.id,))
        print(f"{job.path}: will be validated again at the daemon's next scan")
        return ExitCode.OK
    if job.state not in (State.FAILED, State.CANCELLED):
        raise RunnerError(f"#{job.id} {job.name} is {job.state.value}; only failed or cancelled jobs are retried")
    store.update(job.id, state=State.QUEUED, failure=None, reason="retried: waiting to be planned", plan_path=None,
                 estimate_bytes=None, attempts=0, cancel_requested=0, finished_at=None,
                 expect=(State.FAILED, State.CANCELLED))
    print(f"#{job.id} {job.name}: queued again")
    return ExitCode.OK
