"""`runner retry NAME`: run a failed or cancelled job again (an invalid one is checked again)."""

from __future__ import annotations

from runner.errors import ExitCode, RunnerError


def retry(name: str, state_dir: str | None) -> int:
    from runner.daemon import states
    from runner.box import state_directory
    from runner.daemon.states import State
    from runner.daemon.store import Store
    from runner.daemon.wake import wake_daemon

    state = state_directory(state_dir)
    store = Store.existing(state, writable=True)
    job = store.latest(name)
    if job is None:
        raise RunnerError(f"no job named {name}", "see: runner status")
    if job.state == State.INVALID:
        store.forget(job)
        print(f"{job.path}: validated again " + ("now" if wake_daemon(state) else "at the daemon's next scan"))
        return ExitCode.OK
    if job.state not in (State.FAILED, State.CANCELLED):
        raise RunnerError(f"#{job.id} {job.name} is {job.state.value}; only failed or cancelled jobs are retried")
    if not store.move(job, states.PLANNING, failure=None, hint=None, reason="retried: waiting to be planned",
                      plan_path=None, estimate_bytes=None, attempts=0, cancel_requested=0, withdrawn=0, finished_at=None):
        raise RunnerError(f"#{job.id} {job.name} changed state meanwhile", "see: runner status")
    woken = wake_daemon(state)
    print(f"#{job.id} {job.name}: queued again" + ("" if woken else "; the daemon takes it at its next scan (it is "
                                                                   "not running, or is an older runner)"))
    return ExitCode.OK
