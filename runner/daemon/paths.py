"""What the daemon keeps in its state dir, shared by `runner watch` and the commands that read it (where the
state dir is: runner.box)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path


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


def disk_full_error(error: BaseException) -> bool:
    """Whether an error says the disk is full: admission pauses, and no job is blamed for it."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return isinstance(error, sqlite3.Error) and "full" in str(error)
