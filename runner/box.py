"""Where this box keeps its runs and the daemon's state: one place, read by every command.

A shared box says it once, in a config file, and then `runner watch` writes there and every person's
`runner runs`, `runner sample NAME`, `runner logs NAME` and `runner status` read there, from any folder:

    # /etc/runner/config.yaml (the box), or ~/.config/runner/config.yaml (a person), or $RUNNER_CONFIG
    runs_dir: /srv/runner/runs        # the run root: runs go to <runs_dir>/<outputs.dir>/<name>/<run id>
    state_dir: /srv/runner/state      # the watch daemon's store, logs, snapshots and plans

Each setting is taken from the first place that has it: the command line (--runs-dir, --state-dir), the
environment ($RUNNER_RUNS_DIR, $RUNNER_STATE_DIR), the config file ($RUNNER_CONFIG alone when set; else the
person's file over the box's), then the default: the current folder for the run root, the state dir for
the daemon's run root, $XDG_STATE_HOME/runner (~/.local/state/runner) for the state. A relative path in a
config file is relative to the file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.errors import UsageError

CONFIG_ENV = "RUNNER_CONFIG"
BOX_CONFIG = Path("/etc/runner/config.yaml")
KEYS = {"runs_dir": "the run root", "state_dir": "the watch daemon's state folder"}


def config_files() -> list[Path]:
    """The config files read, weakest first."""
    if os.environ.get(CONFIG_ENV):
        return [Path(os.environ[CONFIG_ENV])]
    person = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "runner" / "config.yaml"
    return [BOX_CONFIG, person]


def configured() -> dict[str, Path]:
    """runs_dir and state_dir as the config files say them (absent keys left out)."""
    return _read(tuple(config_files()))


def _read(files: tuple[Path, ...]) -> dict[str, Path]:
    settings: dict[str, Path] = {}
    for path in files:
        if path.is_file() or os.environ.get(CONFIG_ENV):  # a file named by $RUNNER_CONFIG must be there
            settings.update(_read_one(path))
    return settings


def _read_one(path: Path) -> dict[str, Path]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"{path}: cannot be read as runner's config: {' '.join(str(error).split())}",
                         f"it holds {_keys()}") from None
    if data is None:
        return {}
    unknown = sorted(set(data) - set(KEYS)) if isinstance(data, dict) else None
    if unknown is None or unknown:
        raise UsageError(f"{path}: " + (f"unknown key '{unknown[0]}'" if unknown else "expected a mapping of keys"),
                         f"runner's config holds {_keys()}")
    settings = {}
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise UsageError(f"{path}: {key} must be a folder's path", f"e.g. {key}: /srv/runner/{key[:-4]}")
        settings[key] = (path.parent / Path(value).expanduser()).resolve()
    return settings


def _keys() -> str:
    return ", ".join(f"{key} ({what})" for key, what in KEYS.items())


def run_root(given: str | None) -> Path:
    """Where runs are written and found: --runs-dir, $RUNNER_RUNS_DIR, the config's runs_dir, or the current
    folder."""
    return _first(given, "RUNNER_RUNS_DIR", "runs_dir") or Path(".").resolve()


def state_directory(given: str | None) -> Path:
    """The watch daemon's state: --state-dir, $RUNNER_STATE_DIR, the config's state_dir, or
    $XDG_STATE_HOME/runner (~/.local/state/runner)."""
    found = _first(given, "RUNNER_STATE_DIR", "state_dir")
    if found is not None:
        return found
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base, "runner").resolve()


def daemon_run_root(given: str | None, state_dir: Path) -> Path:
    """The run root of the daemon's jobs: as run_root, but the state dir by default (so runs land in
    <state dir>/runs/<name>/ when nothing says where)."""
    return _first(given, "RUNNER_RUNS_DIR", "runs_dir") or state_dir.resolve()


def _first(given: str | None, variable: str, key: str) -> Path | None:
    if given:
        return Path(given).expanduser().resolve()
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser().resolve()
    return configured().get(key)


def where_set() -> str:
    """How a person says where the box's runs are, for hints."""
    return f"--runs-dir, $RUNNER_RUNS_DIR, or runs_dir in {BOX_CONFIG} (see: docs/daemon.md)"
