"""`runner status`: queued, running (with progress), recent results and failures, from the daemon's store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runner.errors import ExitCode
from runner.readers import loads_bounded, open_regular, read_regular
from runner.rundir import MAX_PLAN_BYTES

RECENT = 20


def status(state_dir: str | None, output_format: str) -> int:
    from runner.daemon.paths import disk_full, state_directory
    from runner.daemon.store import State, Store

    state = state_directory(state_dir)
    store = Store.existing(state, writable=False)
    jobs = store.jobs()
    paused = disk_full(state)
    if output_format == "json":
        records = []
        for job in jobs:
            record = job.to_json()
            record["progress"] = progress(job.run_dir) if job.state == State.RUNNING else None
            records.append(record)
        print(json.dumps({"paused": paused, "jobs": records}, indent=2))
        return ExitCode.OK
    if paused:
        print(f"Admission paused: {paused}\n")
    print(render(jobs))
    return ExitCode.OK


def progress(run_dir: str | None) -> dict | None:
    """Step and total of a running job, from its run directory (read-only, bounded: the run's files
    are written by the job, not by runner's own code alone)."""
    if not run_dir:
        return None
    folder = Path(run_dir)
    try:
        total = loads_bounded(read_regular(folder / "plan.json", MAX_PLAN_BYTES))["steps"]["total_steps"]
        step = _last_step(folder / "metrics.jsonl")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"step": step, "total_steps": total}


def _last_step(metrics: Path) -> int:
    try:
        handle = open_regular(metrics)
    except FileNotFoundError:
        return 0
    with handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
        lines = [line for line in handle.read().splitlines() if line.strip()]
    return loads_bounded(lines[-1])["step"] if lines else 0


def _place(diagnostic: dict) -> str:
    """`file:line: field: ` of a stored diagnostic, leaving out what it does not have."""
    place = diagnostic.get("range") or {}
    line = (place.get("start") or {}).get("line")
    where = f"{place.get('filename', '')}" + (f":{line}" if line else "")
    return where + ": " + (f"{diagnostic['path']}: " if diagnostic.get("path") else "")


def render(jobs) -> str:
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
        step = f"step {shown['step']}/{shown['total_steps']}" if shown else job.reason
        lines.append(f"  #{job.id} {job.name:<24} {job.state.value:<10} {step}  pid {job.pid or '-'}  "
                     f"gpus {job.gpus or '-'}  attempt {job.attempts}  started {age(job.started_at)}")
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
