"""`runner status`: queued, running (with progress), recent results and failures, from the daemon's store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from runner.errors import ExitCode
from runner.terminal import printable


def status(state_dir: str | None, output_format: str) -> int:
    from runner.box import state_directory
    from runner.daemon.paths import disk_full
    from runner.daemon.report import overview, runs_directory
    from runner.daemon.store import Store

    state = state_directory(state_dir)
    store = Store.existing(state, writable=False)
    if output_format == "json":
        print(json.dumps(overview(store, state, runs_directory(state)), indent=2))
        return ExitCode.OK
    jobs = store.jobs()
    paused = disk_full(state)
    if paused:
        print(f"Admission paused: {paused}\n")
    print(printable(render(jobs)))  # names, paths and reasons come from the folder's files
    return ExitCode.OK


def _place(diagnostic: dict) -> str:
    """`file:line: field: ` of a stored diagnostic, leaving out what it does not have."""
    place = diagnostic.get("range") or {}
    line = (place.get("start") or {}).get("line")
    where = f"{place.get('filename', '')}" + (f":{line}" if line else "")
    return where + ": " + (f"{diagnostic['path']}: " if diagnostic.get("path") else "")


def render(jobs) -> str:
    from runner.daemon.report import RECENT, progress
    from runner.daemon.store import State

    def age(timestamp: float | None) -> str:
        if not timestamp:
            return "-"
        seconds = time.time() - timestamp
        return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago" if seconds < 7200 \
            else f"{seconds / 3600:.1f}h ago"

    sections = []
    running = [j for j in jobs if j.state in (State.RUNNING, State.RECOVERING)]
    queued = [j for j in jobs if j.state == State.QUEUED]
    finished = sorted((j for j in jobs if j.state.terminal), key=lambda j: j.updated_at, reverse=True)[:RECENT]
    lines = ["Running:"]
    for job in running:
        shown = progress(job.run_dir)
        # the reason says more than the state only when it is not the state's own word ("running")
        step = f"step {shown['step']}/{shown['total_steps']}" if shown else \
            job.reason if job.reason and job.reason != job.state.value else "starting"
        attempt = (shown or {}).get("attempt") or job.attempts
        pid = job.running_execution.handle.get("pid") if job.running_execution else None  # a local run's
        lines.append(f"  #{job.id} {job.name:<24} {job.state.value:<10} {step}  pid {pid or '-'}  "
                     f"gpus {job.gpus or '-'}  attempt {attempt}  started {age(job.started_at)}")
    sections.append("\n".join(lines if running else ["Running: none"]))
    lines = ["Queued:"] + [f"  #{job.id} {job.name:<24} {job.reason}" for job in queued]
    sections.append("\n".join(lines if queued else ["Queued: none"]))
    lines = ["Recent:"]
    for job in finished:
        failure = f" ({job.failure})" if job.failure else ""
        lines.append(f"  #{job.id} {(job.name or Path(job.path).name):<24} {job.state.value}{failure:<10} "
                     f"{age(job.finished_at or job.updated_at):>9}  {job.reason or ''}")
        if job.state == State.INVALID and job.diagnostics:
            lines += [f"      {_place(d)}{d['summary']}" for d in job.diagnostics if d["severity"] == "error"][:5]
        if job.run_dir:
            lines.append(f"      {job.run_dir}")
    sections.append("\n".join(lines if finished else ["Recent: none"]))
    return "\n\n".join(sections)
