"""Structured logs of a run: events.jsonl (structlog JSON lines) and metrics.jsonl.

The console: on a terminal, one line that says what the run is doing and becomes the progress bar
(the command prints the plan before and the summary after); warnings get a line of their own.
When stdout is not a terminal (the daemon's job logs, CI), or when asked (`runner run --events`), it
gets the JSON lines of events.jsonl instead.

A line that cannot be written (a full disk under the daemon's job log, a reader that left the pipe, a
closed stream) is lost, never the run: the console streams are guarded (`guard_console`) and so is
events.jsonl; the first loss of each is noted once, in the other place.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import structlog

from runner.errors import RunnerError
from runner.logview import progress_line


class Console(io.TextIOBase):
    """stdout or stderr for a run: each line is written at once, straight to the descriptor, and a line
    that cannot be written is dropped (nothing is left in a buffer to fail again at exit). `lost` says
    why the first one was."""

    def __init__(self, stream, name: str) -> None:
        self.stream, self.name = stream, name
        self.lost: str | None = None
        self.noted = False
        """Whether the run's events say that this stream lost lines."""
        self.pending = ""
        self.lock = threading.Lock()
        with suppress(AttributeError, OSError, ValueError):
            stream.flush()  # what was printed before the guard goes first
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # None (closed at start), or a stream of no descriptor
            self.fd = None

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            if "\n" in text:
                self._write_pending()
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self._write_pending()

    def _write_pending(self) -> None:
        text, self.pending = self.pending, ""
        if not text:
            return
        try:
            if self.stream is None:
                raise ValueError("the stream was closed before the run started")
            if self.fd is None:
                self.stream.write(text)
                self.stream.flush()
                return
            data = text.encode(self.encoding, getattr(self.stream, "errors", None) or "strict")
            while data:
                data = data[os.write(self.fd, data):]
        except (OSError, ValueError) as error:  # ENOSPC, EPIPE, EIO, a closed file; UnicodeError is a ValueError
            self.lost = self.lost or _why(error)

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self.fd is None:
            raise io.UnsupportedOperation(f"{self.name} has no descriptor")
        return self.fd

    def writable(self) -> bool:
        return True


def guard_console() -> None:
    """From now on, this process's stdout and stderr lose what they cannot write instead of raising."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, Console):
            setattr(sys, name, Console(stream, name))


class EventLog:
    def __init__(self, path: Path, *, console: bool = True, json_lines: bool | None = None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        """Appended to a line per write: a line that cannot be written is lost whole, and nothing waits
        in a buffer to fail again."""
        self.lost: str | None = None
        tty = sys.stdout.isatty()
        self.json_lines = console and (json_lines if json_lines is not None else not tty)
        self.terminal = console and tty and not self.json_lines
        processors = [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.add_log_level,
                      structlog.processors.JSONRenderer()]
        self.logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=processors)
        self.line_open = False

    def event(self, name: str, **fields) -> None:
        self._append(self.logger.info(name, **fields))
        if self.json_lines:
            print(json.dumps({"event": name, **fields}, default=str), flush=True)
        self._note_console_losses()

    def warning(self, name: str, message: str, **fields) -> None:
        """An event the person at the terminal must see (a signal, a tracker that stopped working)."""
        self._append(self.logger.warning(name, message=message, **fields))
        if self.json_lines:
            print(json.dumps({"event": name, "level": "warning", "message": message, **fields}, default=str),
                  flush=True)
        elif self.terminal:
            print(f"\r\033[K{message}", flush=True)
            self.line_open = False
        self._note_console_losses()

    def _append(self, line: str) -> None:
        try:
            os.write(self.fd, (line + "\n").encode("utf-8", "backslashreplace"))
        except OSError as error:
            if self.lost is None:  # said once, where it can be said
                self.lost = _why(error)
                print(f"runner: cannot write {self.path} ({self.lost}): its events are lost until it can",
                      file=sys.stderr, flush=True)

    def _note_console_losses(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, Console) and stream.lost and not stream.noted:
                stream.noted = True
                self._append(self.logger.warning(
                    "console_lost", message=f"{stream.name} could not be written ({stream.lost}): lines meant "
                    "for it are lost from then on; the run goes on and this file keeps every event",
                    stream=stream.name))

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
        self._note_console_losses()
        os.close(self.fd)


def _why(error: OSError | ValueError) -> str:
    return (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__


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
