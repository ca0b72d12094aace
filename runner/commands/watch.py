"""`runner watch DIR`: run the specs dropped into a folder, exactly once each, surviving crashes."""

from __future__ import annotations

import fcntl
import shlex
import sys
from pathlib import Path

from runner.errors import RunnerError, UsageError


def watch(folder: str, state_dir: str | None, runs_dir: str | None, *, settle: float, invalid_grace: float,
          rescan: float, poll: bool,
          max_attempts: int, job_timeout: float | None, runner_command: str | None) -> int:
    from runner.daemon.paths import runs_directory, state_directory
    from runner.daemon.store import Store
    from runner.daemon.supervisor import Supervisor

    watched = Path(folder)
    if not watched.is_dir():
        raise UsageError(f"{folder}: not a folder")
    state = state_directory(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    lock = open(state / "daemon.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunnerError(f"another runner watch already uses {state}",
                          "stop it first, or give this one its own --state-dir") from None
    log_file = open(state / "daemon.jsonl", "a", buffering=1)
    supervisor = Supervisor(watched, Store(state), state, runs_directory(runs_dir, state), settle=settle,
                            invalid_grace=invalid_grace,
                            rescan=rescan, poll=poll, max_attempts=max_attempts, job_timeout=job_timeout,
                            command=shlex.split(runner_command) if runner_command else None,
                            log_file=_Tee(log_file, sys.stdout))
    return supervisor.serve()


class _Tee:
    """The daemon's log goes to daemon.jsonl and to stdout (journald keeps it under systemd)."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            stream.write(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()
