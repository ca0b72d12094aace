"""`runner logs NAME [--follow]`: a job's output (its child process log) as it is written."""

from __future__ import annotations

import io
import sys
import time

from runner.errors import ExitCode, RunnerError
from runner.readers import open_regular


def logs(name: str, state_dir: str | None, follow: bool) -> int:
    from runner.daemon.paths import state_directory
    from runner.daemon.store import Store

    state = state_directory(state_dir)
    store = Store.existing(state, writable=False)
    job = store.latest(name)
    if job is None:
        raise RunnerError(f"no job named {name}", "see: runner status")
    path = state / "logs" / f"{job.id}.log"
    try:
        stream = open_regular(path)
    except OSError:
        print(f"#{job.id} {job.name or job.path}: no output yet ({job.state.value}: {job.reason})")
        return ExitCode.OK
    with io.TextIOWrapper(stream, encoding="utf-8", errors="replace") as handle:
        sys.stdout.write(handle.read())
        while follow and not store.get(job.id).state.terminal:
            chunk = handle.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.5)
        sys.stdout.write(handle.read())
    return ExitCode.OK
