"""`runner cancel NAME`: a queued job is cancelled at once; a running one checkpoints and stops."""

from __future__ import annotations

from runner.errors import ExitCode, RunnerError


def cancel(name: str, state_dir: str | None) -> int:
    from runner.daemon.paths import state_directory
    from runner.daemon.store import State, Store

    store = Store.existing(state_directory(state_dir), writable=True)
    job = store.latest(name)
    if job is None:
        raise RunnerError(f"no job named {name}", "see: runner status")
    if job.state == State.QUEUED and store.update(job.id, state=State.CANCELLED, reason="cancelled by the user",
                                                  expect=State.QUEUED):
        print(f"#{job.id} {job.name}: cancelled")
        return ExitCode.OK
    if job.state in (State.RUNNING, State.RECOVERING):
        store.update(job.id, cancel_requested=1)
        if job.state == State.RECOVERING:
            store.update(job.id, state=State.CANCELLED, reason="cancelled by the user", expect=State.RECOVERING)
        print(f"#{job.id} {job.name}: cancelling (a running job writes a checkpoint and stops)")
        return ExitCode.OK
    raise RunnerError(f"#{job.id} {job.name} is {job.state.value}; only queued or running jobs can be cancelled")
