"""Structured logs of a run: events.jsonl (structlog JSON lines) and metrics.jsonl.

The console: on a terminal, one line that says what the run is doing and becomes the progress bar
(the command prints the plan before and the summary after); warnings get a line of their own.
When stdout is not a terminal (the daemon's job logs, CI), or when asked (`runner run --events`), it
gets the JSON lines of events.jsonl instead.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import structlog

from runner.errors import RunnerError
from runner.logview import progress_line


class EventLog:
    def __init__(self, path: Path, *, console: bool = True, json_lines: bool | None = None) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)
        tty = sys.stdout.isatty()
        self.json_lines = console and (json_lines if json_lines is not None else not tty)
        self.terminal = console and tty and not self.json_lines
        processors = [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.add_log_level,
                      structlog.processors.JSONRenderer()]
        self.logger = structlog.wrap_logger(structlog.PrintLogger(self.file), processors=processors)
        self.line_open = False

    def event(self, name: str, **fields) -> None:
        self.logger.info(name, **fields)
        if self.json_lines:
            print(json.dumps({"event": name, **fields}, default=str), flush=True)

    def warning(self, name: str, message: str, **fields) -> None:
        """An event the person at the terminal must see (a signal, a tracker that stopped working)."""
        self.logger.warning(name, message=message, **fields)
        if self.json_lines:
            print(json.dumps({"event": name, "level": "warning", "message": message, **fields}, default=str),
                  flush=True)
        elif self.terminal:
            print(f"\r\033[K{message}", flush=True)
            self.line_open = False

    def status(self, text: str) -> None:
        """What the run is doing now, on the terminal's one status line."""
        if self.terminal:
            print(f"\r\033[K{text} ...", end="", flush=True)
            self.line_open = True

    def progress(self, step: int, total: int, loss: float | None, tokens_per_second: float | None,
                 started: float) -> None:
        """The progress bar on a terminal; else, with JSON lines, a `progress` line (the daemon's job log
        and `runner logs -f` show it), which events.jsonl does not keep: metrics.jsonl has every step."""
        eta = round((time.monotonic() - started) / max(step, 1) * (total - step), 1)
        if self.json_lines:
            print(json.dumps({"event": "progress", "step": step, "total_steps": total, "loss": loss,
                              "tokens_per_second": tokens_per_second, "eta_s": eta}), flush=True)
        if not self.terminal:
            return
        width = 24
        filled = int(width * step / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r\033[K[{bar}] {progress_line(step, total, loss, tokens_per_second, eta)}", end="", flush=True)
        self.line_open = True

    def keep_line(self) -> None:
        """Leave what the status line shows (the finished progress bar) on screen; go on below it."""
        if self.terminal and self.line_open:
            print(flush=True)
            self.line_open = False

    def close(self) -> None:
        if self.terminal and self.line_open:
            print("\r\033[K", end="", flush=True)
        self.file.close()


class Diverged(RunnerError):
    """A loss became infinite or NaN: the weights are no longer numbers, so the run must not succeed."""


class MetricsLog:
    """metrics.jsonl, the one place every metric goes through: each record is appended there, then handed
    to the experiment trackers (sinks). A tracker that fails is reported once and dropped; the file is
    the record that counts."""

    def __init__(self, path: Path, sinks: dict | None = None, on_error=None) -> None:
        self.path = path
        self.sinks = dict(sinks or {})
        self.on_error = on_error

    def write(self, record: dict) -> None:
        """Append one record; every metric of every recipe passes here, so a diverged loss stops any run."""
        diverged = sorted(key for key, value in record.items()
                          if "loss" in key and isinstance(value, float) and not math.isfinite(value))
        if diverged:
            raise Diverged(f"the training diverged: {diverged[0]} is {record[diverged[0]]} at step "
                           f"{record.get('step', '?')}",
                           "lower training.learning_rate (or leave it at auto), or check the data")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        values = {key: float(value) for key, value in record.items()
                  if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(record["step"], values)
            except Exception as error:  # a tracker's outage must not end the training it tracks
                del self.sinks[name]
                if self.on_error:
                    self.on_error(name, error)

    def close(self, state: str) -> None:
        for name, sink in list(self.sinks.items()):
            try:
                sink.close(state)
            except Exception as error:  # the run's own state is already decided
                if self.on_error:
                    self.on_error(name, error)
        self.sinks.clear()

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
