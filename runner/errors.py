"""The one user-facing error family, and the exit codes every command shares."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INVALID = 1  # the input was read and is wrong (spec, plan, data), or the job failed
    USAGE = 2  # the command line itself is wrong
    INTERRUPTED = 130


def run_exit_code(state: str) -> int:
    """A finished run's exit code: 0 succeeded, 130 interrupted (run it again to resume), else 1."""
    return int({"succeeded": ExitCode.OK, "interrupted": ExitCode.INTERRUPTED}.get(state, ExitCode.INVALID))


class RunnerError(Exception):
    """An error a user can act on: a message, and a hint that says what to do."""

    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class UsageError(RunnerError):
    exit_code = ExitCode.USAGE
