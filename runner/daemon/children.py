"""Child processes: one process group per job, so a crash, an OOM kill or a segfault ends one
job and never the daemon; the facts needed to recognise a child after a daemon restart; and what a
child's end and its last words say."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runner.daemon import ledger
from runner.daemon.states import State
from runner.failures import Failure
from runner.manifest import Manifest
from runner.readers import open_regular

MAX_REASON = 300
_ERROR_LINE = re.compile(r"^runner \S+: error: (.*)$")


def runner_command() -> list[str]:
    """How the daemon starts runner: the same interpreter, so children see the same install."""
    return [sys.executable, "-m", "runner"]


@dataclass
class Child:
    """A job's run as a local process group (a Run of runner.daemon.local_executor.Local)."""

    job_id: int
    pid: int
    process: subprocess.Popen | None = None
    """None for a child adopted after a daemon restart (not ours to wait on)."""
    started: float = field(default_factory=time.monotonic)
    log_path: Path | None = None
    stop_sent: float | None = None

    detail = None  # "running" says it all

    def exit_code(self) -> int | None:
        """The exit status once it ended; for an adopted child, -1 (unknown) once it is gone."""
        if self.process is not None:
            return self.process.poll()
        return None if process_start_time(self.pid) is not None else -1

    def stop(self, cold: bool) -> None:
        """Warm: SIGTERM (the run writes a checkpoint and stops); cold: SIGKILL to the whole group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group has already ended
            os.killpg(self.pid, signal.SIGKILL if cold else signal.SIGTERM)

    @property
    def process_group(self) -> int:
        return self.pid


def launch(job_id: int, command: list[str], log_path: Path, env: dict[str, str]) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    return Child(job_id, process.pid, process, log_path=log_path)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot): with the pid, it tells a
    live child from an unrelated process that reused the pid after a reboot or a long time."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[19] if fields[0] not in ("Z", "X") else None
    except (OSError, IndexError):
        return None


def log_tail(path: Path | None, lines: int) -> str:
    if path is None:
        return ""
    try:
        with open_regular(path) as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def last_words(path: Path | None) -> str:
    """One line that says why a child ended: runner's own error line (with its hint) when it printed
    one, else the last line of its output (a traceback's last line names the exception)."""
    lines = log_tail(path, 40).splitlines()
    for index in range(len(lines) - 1, -1, -1):
        match = _ERROR_LINE.match(lines[index])
        if match:
            hint = lines[index + 1].strip() if index + 1 < len(lines) and lines[index + 1].strip().startswith(
                "hint:") else ""
            return one_line(match.group(1) + (f" ({hint})" if hint else ""))
    return one_line(lines[-1]) if lines else ""


def one_line(text: str) -> str:
    """A reason as `runner status` shows it: one line, of bounded length."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def run_outcome(exit_code: int, manifest: Manifest | None, log_path: Path | None) -> tuple[State, str | None, str]:
    """(state, failure kind, reason) of a finished run child; the reason is one line."""
    recorded = ledger.outcome(manifest) if manifest is not None else None
    if recorded is not None and (recorded.state == State.FAILED or exit_code in (0, -1)):
        return recorded.state, recorded.failure, one_line(recorded.reason)
    if exit_code < -1:
        name = signal.Signals(-exit_code).name
        if -exit_code == signal.SIGKILL:
            return State.FAILED, Failure.KILLED.value, "killed by SIGKILL (the kernel's OOM killer, or kill -9)"
        return State.FAILED, Failure.RUNTIME.value, f"crashed with {name}"
    words = last_words(log_path)
    return State.FAILED, Failure.RUNTIME.value, f"exited with code {exit_code}" + (f": {words}" if words else "")
