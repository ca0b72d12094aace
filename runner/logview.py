"""JSON log lines as a person reads them: one short line each, numbers rounded.

A run writes JSON event lines (events.jsonl, and its stdout where that is not a terminal: the daemon's job
logs, Slurm's output); the daemon writes its own (daemon.jsonl). `runner logs`, the status page's log tail,
`runner watch` on a terminal and `runner submit` show them through `render`; a line that is not a JSON
event (runner's error lines, a traceback, Slurm's own words) is shown as it is. `--format json` keeps the
lines as written.
"""

from __future__ import annotations

import json
from datetime import datetime

SAID = {
    "run_started": "run started: {plan} ({method}), attempt {attempt}",
    "model_loaded": "model loaded: {model} in {seconds} s",
    "checkpoint": "checkpoint at step {step}",
    "parameters_compared": "parameters compared with the base: {changed} changed, unexpected {unexpected}",
    "sample": "sample: {prompt!r} -> {after!r} (before: {before!r})",
    "run_finished": "run finished: {state}",
    "daemon_started": "daemon started: watching {folder}, state in {state_dir}, runs in {runs_dir}",
    "daemon_stopped": "daemon stopped",
    "job_started": "#{job} {name}: started (attempt {attempt})",
    "job_finished": "#{job} {name}: {state}",
    "job_queued": "#{job} {name}: queued",
    "job_planned": "#{job} {name}: planned ({devices} {device}, about {estimate_gib} GiB)",
    "job_invalid": "#{job} {path}: invalid: {reason}",
    "job_state": "#{job} {name}: {was} -> {now}",
}
"""Events that read better as a sentence; the others are `event: key value, ...`."""
SHOWN_FIRST = ("job", "name")
LEFT_OUT = {"event", "timestamp", "level", "logger"}


def render(line: str) -> str:
    """One log line, human-readable; a line that is not a JSON event is returned as it is."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return line.rstrip("\n")
    try:
        record = json.loads(stripped)
    except ValueError:
        return line.rstrip("\n")
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return line.rstrip("\n")
    return _when(record.get("timestamp")) + _said(record)


def render_text(text: str) -> str:
    """Every line of a log, rendered."""
    return "\n".join(render(line) for line in text.splitlines())


def render_tail(text: str, count: int) -> str:
    """The last `count` lines of a log, rendered; a run of progress lines is its last one (the status
    page's log tail: twenty lines of steps would hide what happened before them)."""
    shown: list[str] = []
    was_progress = False
    for line in text.splitlines():
        progress = _is_progress(line)
        if progress and was_progress:
            shown[-1] = render(line)
        else:
            shown.append(render(line))
        was_progress = progress
    return "\n".join(shown[-count:])


def _is_progress(line: str) -> bool:
    return line.startswith('{"event": "progress"')


def progress_line(step: int, total: int, loss: float | None, tokens_per_second: float | None,
                  eta_s: float | None) -> str:
    """`step 12/24  loss 0.8192  2,345 tok/s  ETA 0:12`: what the progress bar and the logs say."""
    parts = [f"step {step}/{total}"]
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.4f}")
    if tokens_per_second:
        parts.append(f"{tokens_per_second:,.0f} tok/s")
    if isinstance(eta_s, (int, float)):
        parts.append(f"ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}")
    return "  ".join(parts)


def _said(record: dict) -> str:
    event = record["event"]
    if event == "progress":
        return progress_line(record.get("step", 0), record.get("total_steps", 0), record.get("loss"),
                             record.get("tokens_per_second"), record.get("eta_s"))
    if record.get("level") == "warning" and record.get("message"):
        return f"warning: {record['message']}"
    template = SAID.get(event)
    if template is not None:
        try:
            text = template.format_map({key: _value(value) if not isinstance(value, str) else value
                                        for key, value in record.items()})
        except (KeyError, ValueError, IndexError):  # an event without a field its sentence names
            pass
        else:
            error = record.get("error") or record.get("reason")
            if event in ("run_finished", "job_finished") and error:
                text += f": {error}"
            return text
    fields = [key for key in SHOWN_FIRST if key in record] + [key for key in record if key not in SHOWN_FIRST]
    shown = ", ".join(f"{key} {_value(record[key])}" for key in fields
                      if key not in LEFT_OUT and record[key] not in (None, "", [], {}))
    return event.replace("_", " ") + (f": {shown}" if shown else "")


def _value(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(value)


def _when(stamp) -> str:
    """`HH:MM:SS ` in local time, from an ISO timestamp ('' without one)."""
    if not isinstance(stamp, str):
        return ""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S ")
    except ValueError:
        return ""
