"""Structured logs of a run: events.jsonl (structlog JSON lines) and metrics.jsonl.

On a terminal the console gets short human lines and a progress bar; otherwise it gets
the same JSON lines as the file, for whatever collects them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import structlog

from runner.errors import RunnerError


class EventLog:
    def __init__(self, path: Path, *, console: bool = True) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)
        self.console = console
        self.terminal = console and sys.stdout.isatty()
        processors = [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.add_log_level,
                      structlog.processors.JSONRenderer()]
        self.logger = structlog.wrap_logger(structlog.PrintLogger(self.file), processors=processors)

    def event(self, name: str, **fields) -> None:
        self.logger.info(name, **fields)
        if not self.console:
            return
        if self.terminal:
            shown = " ".join(f"{k}={v}" for k, v in fields.items() if not isinstance(v, (dict, list)))
            print(f"\r\033[K[runner] {name} {shown}".rstrip(), flush=True)
        else:
            print(json.dumps({"event": name, **fields}, default=str), flush=True)

    def progress(self, step: int, total: int, loss: float | None, tokens_per_second: float | None,
                 started: float) -> None:
        if not self.terminal:
            return
        elapsed = time.monotonic() - started
        eta = elapsed / max(step, 1) * (total - step)
        width = 24
        filled = int(width * step / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        loss_text = f" loss {loss:.4f}" if loss is not None else ""
        speed = f" {tokens_per_second:,.0f} tok/s" if tokens_per_second else ""
        print(f"\r\033[K[{bar}] step {step}/{total}{loss_text}{speed} ETA {int(eta // 60)}:{int(eta % 60):02d}",
              end="", flush=True)

    def close(self) -> None:
        if self.terminal:
            print(flush=True)
        self.file.close()


class Diverged(RunnerError):
    """A loss became infinite or NaN: the weights are no longer numbers, so the run must not succeed."""


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path

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

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
