"""`runner cancel NAME`: a queued job is cancelled at once; a running one checkpoints and stops."""

from __future__ import annotations

from runner.errors import ExitCode, RunnerError

TRIES = 5
"""The daemon may move the job between our read and our write (a compare-and-set): read again."""


def cancel(name: str, state_dir: str | None) -> int:
    from runner.box import state_directory
    from runner.daemon.states import State
    from runner.daemon.store import Store
    from runner.daemon.wake import wake_daemon

    state = state_directory(state_dir)
    store = Store.existing(state, writable=True)
    for _ in range(TRIES):
        job = store.latest(name)
        if job is None:
            raise RunnerError(f"no job named {name}", "see: runner status")
        if job.state == State.RUNNING:
            store.update(job.id, cancel_requested=1, expect=State.RUNNING)
            wake_daemon(state)  # it stops the run at its next pass: now
            print(f"#{job.id} {job.name}: cancelling (a running job writes a checkpoint and stops)")
            return ExitCode.OK
        if job.state in (State.QUEUED, State.RECOVERING):
            if store.move(job, State.CANCELLED, reason="cancelled by the user", cancel_requested=1):
                wake_daemon(state)  # a plan being made for it is abandoned at the daemon's next pass: now
                print(f"#{job.id} {job.name or job.path}: cancelled")
                return ExitCode.OK
            continue
        raise RunnerError(f"#{job.id} {job.name or job.path} is {job.state.value}; only queued or running jobs can "
                          "be cancelled")
    raise RunnerError(f"#{job.id} {job.name} changed state {TRIES} times while being cancelled", "try again")
