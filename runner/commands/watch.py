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
          slurm_settings: dict | None = None) -> int:
    """`executor`: where jobs run, "local" (children of the daemon) or "slurm" (Slurm jobs; `slurm_settings`:
    partition, account, time and config_file, as `runner submit` takes them)."""
    from runner.daemon.admission import Allowances
    from runner.box import daemon_run_root, state_directory
    from runner.daemon.store import Store, lock_folders
    from runner.daemon.supervisor import Supervisor

    watched = Path(folder)
    if not watched.is_dir():
        raise UsageError(f"{folder}: not a folder")
    for granted in allow_read:
        if not Path(granted).is_dir():
            raise UsageError(f"--allow-read {granted}: not a folder")
    running, devices = cluster(executor, slurm_settings or {})
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
    supervisor = Supervisor(watched, store, state, runs, settle=settle, invalid_grace=invalid_grace, rescan=rescan,
                            poll=poll, max_attempts=max_attempts, job_timeout=job_timeout, plan_timeout=plan_timeout,
                            stall=stall_seconds,
                            max_jobs=max_jobs, command=shlex.split(runner_command) if runner_command else None,
                            allow=Allowances(allow_reward_functions, allow_remote_code, tuple(allow_read)), executor=running,
                            devices=devices,
                            http=server.url if server else None, log_file=log_file)
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


def cluster(executor: str, settings: dict):
    """(executor, devices) for the supervisor: (None, None) runs jobs as the daemon's children on its GPUs."""
    flags = {"partition": "--partition", "account": "--account", "time": "--time", "config_file": "--slurm-config"}
    given = [flags[name] for name, value in settings.items() if value]
    if executor == "local":
        if given:
            raise UsageError(f"{', '.join(given)}: for --executor slurm only", "add --executor slurm, or leave them out")
        return None, None
    from runner.daemon.slurm_executor import ClusterDevices, Slurm
    from runner.launch import slurm

    config_file = settings.get("config_file")
    config = slurm.load_config(slurm.config_path(config_file), required=bool(config_file),
                               partition=settings.get("partition"), account=settings.get("account"),
                               time=settings.get("time"))
    return Slurm(config), ClusterDevices(config)


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
