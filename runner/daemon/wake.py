"""Wake the daemon of a state dir now, instead of at its next rescan: `runner retry` and `runner cancel`
change the store, and the daemon acts on the change at its next pass.

The daemon wakes on SIGUSR1 (runner.daemon.supervisor). The signal goes only to the process that
daemon.json names when that process is a `runner watch` that catches SIGUSR1 (/proc/PID/status, SigCgt):
a stale pid reused by another program, or a daemon of an older runner (for which SIGUSR1 would be the
default action, the end of the process), is left alone, and the change waits for the rescan as before.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from runner.daemon.paths import DAEMON_FILE
from runner.readers import loads_bounded, read_regular

WAKE_SIGNAL = signal.SIGUSR1


def wake_daemon(state_dir: Path) -> bool:
    """Signal the daemon of `state_dir` to make a pass now; whether it was signalled."""
    try:
        pid = loads_bounded(read_regular(state_dir / DAEMON_FILE, 1 << 20)).get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(pid, int) or pid <= 0 or not _is_waking_daemon(pid):
        return False
    try:
        os.kill(pid, WAKE_SIGNAL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _is_waking_daemon(pid: int) -> bool:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if b"runner" not in b" ".join(words) or b"watch" not in words:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (WAKE_SIGNAL - 1) & 1)
