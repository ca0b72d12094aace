"""`runner status`: queued, running (with progress), recent results and failures, from the daemon's store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from runner.errors import ExitCode

RECENT = 20


def status(state_dir: str | None, output_format: str) -> int:
    from runner.daemon.paths import state_directory
    from runner.daemon.store import State, Store

    store = Store(state_directory(state_dir))
    jobs = store.jobs()
    if output_format == "json":
        records = []
        for job in jobs:
            record = job.to_json()
            record["progress"] = progress(job.run_dir) if job.state == State.RUNNING else None
            records.append(record)
        print(json.dumps({"jobs": records}, indent=2))
        return ExitCode.OK
    print(render(jobs))
    return ExitCode.OK


def progress(run_dir: str | None) -> dict | None:
    """Step and total of a running job, from its run directory (read-only)."""
    if not run_dir:
        return None
    folder = Path(run_dir)
    try:
        total = json.loads((folder / "plan.json").read_text())["steps"]["total_steps"]
        lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").is_file() else []
        step = json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return None
    return {"step": step, "total_steps": total}


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
            lines += [f"      {d['range']['filename']}:{d['range'].get('start', {}).get('line', '?')}: "
                      f"{d['path']}: {d['summary']}" for d in job.diagnostics if d["severity"] == "error"][:5]
        if job.run_dir:
            lines.append(f"      {job.run_dir}")
    sections.append("\n".join(lines if finished else ["Recent: none"]))
    return "\n\n".join(sections)
