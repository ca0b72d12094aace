"""What the daemon's jobs and runs look like from outside, as JSON: the one builder that `runner status
--format json`, the status page's API and the page itself use.

Everything here only reads: the store (opened read-only by the caller) and files in the state dir
and under the run root, each bounded (a run's files are written by the job, not by runner alone).
Run folders are named by their path relative to the run root; a name that leads outside it is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.daemon.children import log_tail
from runner.logview import render_tail
from runner.daemon.paths import DAEMON_FILE, disk_full
from runner.daemon.scheduling import queue_order
from runner.daemon.states import State
from runner.daemon.store import Job, Store
from runner.readers import loads_bounded, open_regular, read_regular
from runner.rundir import MAX_PLAN_BYTES

RECENT = 20
"""Finished jobs shown."""
LOG_LINES = 20
MAX_POINTS = 2000
"""Points of a curve; a longer run's metrics are thinned to this many (the last one always kept)."""
MAX_SERIES = 24
"""Curves of one run at most (a method may log many metrics; the page charts the ones it knows first)."""
NOT_CURVES = {"step", "epoch", "elapsed_s", "tokens_seen"}
"""Numbers in metrics.jsonl that are not curves over steps."""
METRICS_TAIL_BYTES = 8 * 2**20
"""The end of a metrics.jsonl that is read (a long run's file grows without bound)."""


class OutsideRunRoot(ValueError):
    """A run name that resolves outside the run root."""


def overview(store: Store, state_dir: Path, runs_dir: Path) -> dict:
    """The daemon and its jobs: queued in queue order, running with progress, the recent finished ones."""
    jobs = store.jobs()
    queued = queue_order([job for job in jobs if job.state in (State.QUEUED, State.RECOVERING)])
    running = [job for job in jobs if job.state == State.RUNNING]
    finished = sorted((job for job in jobs if job.state.terminal), key=lambda job: job.updated_at,
                      reverse=True)[:RECENT]
    return {"paused": disk_full(state_dir), "daemon": _daemon(state_dir),
            "queue": [job.id for job in queued], "running": [job.id for job in running],
            "recent": [job.id for job in finished],
            "jobs": [job_record(job, runs_dir) for job in jobs]}


def job_record(job: Job, runs_dir: Path, log_path: Path | None = None) -> dict:
    """A job as the store has it, with its progress while it runs, the name of its run folder (for the
    run's page) and, when asked (a log path given), its log's last lines as a person reads them (JSON
    events rendered by runner.logview)."""
    record = job.to_json()
    record["waits_for"] = job.step.value if job.state == State.QUEUED and job.step else None
    record["progress"] = progress(job.run_dir) if job.state in (State.RUNNING, State.RECOVERING) else None
    record["run"] = run_name(job.run_dir, runs_dir)
    record["evals"] = evals_outcome(job.run_dir) if job.state.terminal else None
    if log_path is not None:
        record["log_tail"] = render_tail(log_tail(log_path, LOG_LINES * 20), LOG_LINES)
    return record


def evals_outcome(run_dir: str | None) -> dict | None:
    """A finished run's evals, from its evals/results.json: whether the gates passed, each gate, and each
    score of the base and the result (None without evals)."""
    record = _json_file(Path(run_dir) / "evals" / "results.json") if run_dir else None
    if record is None:
        return None
    return {"passed": record.get("passed"), "gates": record.get("gates") or [],
            "scores": {f"{result.get('name')}.{metric}": score for result in record.get("results") or []
                       if isinstance(result, dict) for metric, score in (result.get("scores") or {}).items()}}


def job_detail(store: Store, state_dir: Path, runs_dir: Path, job_id: int) -> dict | None:
    job = store.get(job_id)
    return None if job is None else job_record(job, runs_dir, state_dir / "logs" / f"{job_id}.log")


def progress(run_dir: str | None) -> dict | None:
    """Step, total, tokens per second, loss and ETA of a running job, from its run directory, and which
    attempt of the run this is (the manifest counts every start: a recovery, a `runner retry`)."""
    if not run_dir:
        return None
    folder = Path(run_dir)
    manifest = _json_file(folder / "manifest.json") or {}
    plan = _json_file(folder / "plan.json") or manifest.get("plan")
    try:
        total = plan["steps"]["total_steps"]
        last = _metrics_tail(folder / "metrics.jsonl", 65536)[-1:]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    record = last[0] if last else {}
    step, elapsed = record.get("step") or 0, record.get("elapsed_s")
    eta = round(elapsed / step * max(0, total - step), 1) if step and isinstance(elapsed, (int, float)) else None
    attempts = manifest.get("attempts")
    return {"step": step, "total_steps": total, "loss": record.get("loss"),
            "tokens_per_second": record.get("tokens_per_second"), "eta_s": eta,
            "attempt": len(attempts) if isinstance(attempts, list) and attempts else None}


def run_name(run_dir: str | None, runs_dir: Path) -> str | None:
    """A run folder's name in URLs: its path under the run root (None when it is not under it)."""
    if not run_dir:
        return None
    try:
        return Path(run_dir).resolve().relative_to(runs_dir.resolve()).as_posix()
    except ValueError:
        return None


def run_folder(name: str, runs_dir: Path) -> Path | None:
    """The run folder a name denotes: OutsideRunRoot when it leads out of the run root (`..`, an absolute
    path, a link that leaves it), None when there is no run there."""
    root = runs_dir.resolve()
    folder = (root / name).resolve()
    if Path(name).is_absolute() or (folder != root and root not in folder.parents):
        raise OutsideRunRoot(f"{name} is outside the run root")
    return folder if (folder / "manifest.json").is_file() or (folder / "plan.json").is_file() else None


def run_detail(folder: Path) -> dict:
    """A run's page: its manifest (state, error, metrics, samples) and plan summary (trainable table,
    memory estimate, steps). Either file may be missing or unreadable (a run that just started)."""
    manifest, plan = _json_file(folder / "manifest.json"), _json_file(folder / "plan.json")
    plan = plan or (manifest or {}).get("plan") or {}
    manifest = dict(manifest or {})
    manifest.pop("plan", None)  # shown from the plan's own summary
    return {"path": str(folder), "manifest": manifest or None,
            "plan": {key: plan.get(key) for key in ("name", "method", "device", "trainable", "memory", "steps")}
            if plan else None}


def run_metrics(folder: Path) -> dict:
    """A run's curves from its metrics.jsonl: `series`, every numeric metric (loss, learning_rate, grad_norm,
    tokens_per_second, eval_loss and other eval metrics, a method's own) as [step, value] points, each thinned
    to at most MAX_POINTS (the last one always kept), at most MAX_SERIES of them; `points` is the loss curve
    alone, and `lines` how many lines have a loss."""
    try:
        records = _metrics_tail(folder / "metrics.jsonl", METRICS_TAIL_BYTES)
    except (OSError, ValueError):
        records = []
    series: dict[str, list] = {}
    for record in records:
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for key, value in record.items():
            if key in NOT_CURVES or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in series or len(series) < MAX_SERIES:
                series.setdefault(key, []).append([step, value])
    count = len(series.get("loss", []))
    series = {key: _thinned(points) for key, points in series.items()}
    return {"lines": count, "points": series.get("loss", []), "series": series}


def _thinned(points: list) -> list:
    count = len(points)
    if count <= MAX_POINTS:
        return points
    stride = -(-count // MAX_POINTS)
    return points[::stride] + ([points[-1]] if (count - 1) % stride else [])


def _metrics_tail(path: Path, limit: int) -> list[dict]:
    """The complete JSON lines among the last `limit` bytes of a metrics file ([] when there is none)."""
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        return []
    with handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - limit))
        text = handle.read(limit)
    lines = text.split(b"\n")
    if size > limit:
        lines = lines[1:]  # the first may be cut
    records = []
    for line in lines:
        try:
            record = loads_bounded(line) if line.strip() else None
        except ValueError:  # a line being written
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _json_file(path: Path) -> dict | None:
    try:
        data = loads_bounded(read_regular(path, MAX_PLAN_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def runs_directory(state_dir: Path) -> Path:
    """The run root of the daemon of this state dir, as it said in daemon.json (the state dir before it did)."""
    return Path(_daemon(state_dir).get("runs_dir") or state_dir)


def _daemon(state_dir: Path) -> dict:
    """The daemon's own facts (daemon.json), or {} before it wrote them."""
    return _json_file(state_dir / DAEMON_FILE) or {}
