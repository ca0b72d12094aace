"""Where the daemon keeps its state, shared by `runner watch` and the commands that read it."""

from __future__ import annotations

import os
from pathlib import Path


def state_directory(given: str | None) -> Path:
    """--state-dir, $RUNNER_STATE_DIR, or $XDG_STATE_HOME/runner (~/.local/state/runner)."""
    if given or os.environ.get("RUNNER_STATE_DIR"):
        return Path(given or os.environ["RUNNER_STATE_DIR"]).resolve()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base, "runner").resolve()


def runs_directory(given: str | None, state_dir: Path) -> Path:
    """The run root of the daemon's jobs: --runs-dir, $RUNNER_RUNS_DIR, or the state dir (so runs land in
    <state dir>/<outputs.dir>/<name>/, that is <state dir>/runs/<name>/ by default)."""
    return Path(given or os.environ.get("RUNNER_RUNS_DIR") or state_dir).resolve()


DAEMON_FILE = "daemon.json"
"""In the state dir: the running daemon's own facts (folder, run root, GPUs and what they hold)."""

MIN_FREE_BYTES = 64 * 1024 * 1024
"""Below this much free space where the state lives, the daemon admits, plans and starts nothing:
snapshots, plans, logs and the store all need room, and a half-written state is worse than a wait."""


def disk_full(state_dir: Path) -> str | None:
    """Why admission is paused for lack of space (None when there is room); `runner status` says the same."""
    try:
        stats = os.statvfs(state_dir)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= MIN_FREE_BYTES:
        return None
    return (f"the disk of {state_dir} has {free / 2**20:.1f} MiB free (at least {MIN_FREE_BYTES // 2**20} MiB "
            "are needed): no new job is admitted, planned or started until there is room")
