"""`runner watch DIR`: run the specs dropped into a folder, exactly once each, surviving crashes."""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import suppress
from pathlib import Path

from runner.errors import UsageError


def watch(folder: str, state_dir: str | None, runs_dir: str | None, *, settle: float, invalid_grace: float,
          rescan: float, poll: bool, max_attempts: int, job_timeout: float | None, runner_command: str | None,
          allow_reward_functions: bool = False, allow_remote_code: bool = False, allow_read: list[str] = (),
          plan_timeout: float = 300.0, stall_seconds: float = 60.0,
          max_jobs: int | None = None, http: str | None = None, executor: str = "local",
          executor_options: dict | None = None) -> int:
    """`executor`: where jobs run, a name of runner.daemon.executor.EXECUTORS; `executor_options`: the options
    of every executor by their `dest` (those of another executor than this one must not be given)."""
    from runner.box import daemon_run_root, state_directory
    from runner.daemon import children
    from runner.daemon.admission import Allowances
    from runner.daemon.config import DaemonConfig
    from runner.daemon.store import Store, lock_folders
    from runner.daemon.supervisor import Supervisor

    watched = Path(folder)
    if not watched.is_dir():
        raise UsageError(f"{folder}: not a folder")
    for granted in allow_read:
        if not Path(granted).is_dir():
            raise UsageError(f"--allow-read {granted}: not a folder")
    command = shlex.split(runner_command) if runner_command else children.runner_command()
    running = configured_executor(executor, executor_options or {}, command)
    state = state_directory(state_dir)
    if state.exists() and not state.is_dir():
        raise UsageError(f"--state-dir {state} is not a folder")
    state.mkdir(parents=True, exist_ok=True)
    runs = daemon_run_root(runs_dir, state)
    runs.mkdir(parents=True, exist_ok=True)
    locks = lock_folders({"state dir": state, "watched folder": watched, "run root": runs})  # held for its life
    log_file = _Tee(open(state / "daemon.jsonl", "a", buffering=1),
                    _Rendered(sys.stdout) if sys.stdout.isatty() else sys.stdout)
    store, moved = Store.for_daemon(state)
    server = page(state, runs, http) if http else None  # bound before the loop: a taken port is an error now
    config = DaemonConfig(watched.resolve(), state, runs, running, tuple(command), settle=settle,
                          invalid_grace=invalid_grace, rescan=rescan, poll=poll, max_attempts=max_attempts,
                          job_timeout=job_timeout, plan_timeout=plan_timeout, stall=stall_seconds, max_jobs=max_jobs,
                          allow=Allowances(allow_reward_functions, allow_remote_code, tuple(allow_read)),
                          http=server.url if server else None)
    supervisor = Supervisor(config, store, log_file)
    if moved:
        print(f"runner watch: {moved}; the store is rebuilt from the run directories", file=sys.stderr)
        supervisor.log.msg("store_moved_aside", detail=moved)
    try:
        if server:
            server.start()
        return supervisor.serve()
    finally:
        if server:
            server.stop()
        store.close()
        for lock in locks:
            os.close(lock)


def configured_executor(name: str, options: dict, command: list[str]):
    """The executor of that name in the table, configured with its options; options of another executor are
    refused (they would be ignored)."""
    from runner.daemon.executor import EXECUTORS

    for other in EXECUTORS.values():
        given = [option.flag for option in other.options if options.get(option.dest)]
        if other.name != name and given:
            raise UsageError(f"{', '.join(given)}: for --executor {other.name} only",
                             f"add --executor {other.name}, or leave them out")
    return EXECUTORS[name].configured(options, command)


def page(state: Path, runs: Path, address: str):
    """The read-only status page and JSON API on `address`, served from threads beside the loop."""
    from runner.daemon.web import Page

    return Page.bind(address, state, runs)


class _Rendered:
    """A person at the daemon's terminal reads its events as sentences (runner.logview); daemon.jsonl, and
    stdout when it is not a terminal (journald), keep the JSON lines."""

    def __init__(self, stream) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> None:
        from runner.logview import render

        *complete, self.pending = (self.pending + text).split("\n")
        for line in complete:
            self.stream.write(render(line) + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _Tee:
    """The daemon's log goes to daemon.jsonl and to stdout (journald keeps it under systemd). A stream
    that cannot be written (a full disk) loses the line, never the daemon."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            with suppress(OSError, ValueError):
                stream.write(text)

    def flush(self) -> None:
        for stream in self.streams:
            with suppress(OSError, ValueError):
                stream.flush()
