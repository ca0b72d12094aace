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
