"""`runner logs NAME [--follow]`: a job's output (its child process log) as it is written.

NAME is a daemon job; or a run folder, a spec file or a spec name under the run root, whose latest
run's events.jsonl is shown. The JSON event lines are shown as a person reads them (runner.logview: a
running job's step progress among them), or as written with --format json.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from runner.errors import ExitCode
from runner.readers import open_regular
from runner.terminal import printable


def logs(name: str, state_dir: str | None, follow: bool, runs_dir: str | None = None,
         output_format: str = "text") -> int:
    from runner.box import state_directory
    from runner.daemon.store import STORE_FILE, Store

    state = state_directory(state_dir)
    # --state-dir names a daemon (a typo there is an error); without it, no daemon store means a run's log
    if Path(name).exists() or not (state_dir is not None or (state / STORE_FILE).is_file()):
        return run_logs(name, runs_dir, follow, output_format)
    store = Store.existing(state, writable=False)
    job = store.latest(name)
    if job is None:
        return run_logs(name, runs_dir, follow, output_format)
    path = state / "logs" / f"{job.id}.log"
    try:
        stream = open_regular(path)
    except OSError:
        print(f"#{job.id} {job.name or job.path}: no output yet ({job.state.value}: {job.reason})")
        return ExitCode.OK
    return _show(stream, lambda: follow and not store.get(job.id).state.terminal, output_format)


def run_logs(target: str, runs_dir: str | None, follow: bool, output_format: str = "text") -> int:
    """The events.jsonl of a run: the one named, or the latest of a spec (any state: failed runs are the
    ones whose logs get read)."""
    from runner.box import run_root
    from runner.runs import RunRecord, find_run

    run = find_run(target, run_root(runs_dir), succeeded=False)
    try:
        stream = open_regular(run.path / "events.jsonl")
    except OSError:
        print(f"{run.path}: no events yet ({run.state})")
        return ExitCode.OK
    return _show(stream, lambda: follow and (RunRecord.read(run.path) or run).state == "running", output_format)


def _show(stream, following, output_format: str = "text") -> int:
    """Print the file, then what is appended to it while `following()` holds; complete lines only, each
    rendered (text) or as written (json), and a last line without its newline at the end."""
    from runner.logview import render

    def write(lines: list[str]) -> None:
        for line in lines:
            sys.stdout.write(printable(render(line) if output_format == "text" else line) + "\n")
        sys.stdout.flush()

    pending, ended = "", False
    with io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="") as handle:
        while True:
            chunk = handle.read()
            if chunk:
                *complete, pending = (pending + chunk).split("\n")
                write(complete)
            elif ended:  # read once more after the end was seen: its last lines
                break
            elif following():
                time.sleep(0.5)
            else:
                ended = True
    if pending:
        write([pending])
    return ExitCode.OK
