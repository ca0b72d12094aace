"""The daemon's actual state: one SQLite row per (spec path, content hash).

WAL mode, so `runner status`, `cancel`, `retry` and `logs` read and write safely while the
daemon runs. Every state change is one short transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class State(str, Enum):
    INVALID = "invalid"
    QUEUED = "queued"
    RUNNING = "running"
    RECOVERING = "recovering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED, State.INVALID)


class Failure(str, Enum):
    PLAN = "plan"
    OOM = "oom"
    RUNTIME = "runtime"
    TIMEOUT = "timeout"
    KILLED = "killed"


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    failure TEXT,
    reason TEXT,
    diagnostics TEXT,
    depends_on TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    plan_path TEXT,
    estimate_bytes INTEGER,
    devices INTEGER,
    device_type TEXT,
    run_dir TEXT,
    pid INTEGER,
    pid_start TEXT,
    gpus TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    UNIQUE (path, sha256)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs (name);
"""


@dataclass
class Job:
    id: int
    path: str
    sha256: str
    name: str | None
    state: State
    failure: str | None
    reason: str | None
    diagnostics: list | None
    depends_on: list[str]
    attempts: int
    plan_path: str | None
    estimate_bytes: int | None
    devices: int | None
    device_type: str | None
    run_dir: str | None
    pid: int | None
    pid_start: str | None
    gpus: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @classmethod
    def of(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["state"] = State(data["state"])
        data["diagnostics"] = json.loads(data["diagnostics"]) if data["diagnostics"] else None
        data["depends_on"] = json.loads(data["depends_on"]) if data["depends_on"] else []
        data["cancel_requested"] = bool(data["cancel_requested"])
        return cls(**data)

    def to_json(self) -> dict:
        record = dict(self.__dict__)
        record["state"] = self.state.value
        return record


class Store:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "runner.db"
        self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(SCHEMA)

    def close(self) -> None:
        self.connection.close()

    # --- reads ---------------------------------------------------------------------------------

    def jobs(self, *states: State) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.connection.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id",
                                           [s.value for s in states])
        else:
            rows = self.connection.execute("SELECT * FROM jobs ORDER BY id")
        return [Job.of(row) for row in rows]

    def get(self, job_id: int) -> Job:
        return Job.of(self.connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def find(self, path: str, sha256: str) -> Job | None:
        row = self.connection.execute("SELECT * FROM jobs WHERE path = ? AND sha256 = ?", (path, sha256)).fetchone()
        return Job.of(row) if row else None

    def latest(self, name_or_path: str) -> Job | None:
        """The newest row of a spec, by its name or by its path."""
        for column, value in (("name", name_or_path), ("path", str(Path(name_or_path).resolve()))):
            row = self.connection.execute(f"SELECT * FROM jobs WHERE {column} = ? ORDER BY id DESC LIMIT 1",
                                          (value,)).fetchone()
            if row:
                return Job.of(row)
        return None

    def latest_succeeded(self, name: str, folder: str) -> Job | None:
        prefix = folder.rstrip(os.sep) + os.sep
        row = self.connection.execute(
            "SELECT * FROM jobs WHERE name = ? AND state = 'succeeded' AND substr(path, 1, ?) = ? "
            "ORDER BY id DESC LIMIT 1", (name, len(prefix), prefix)).fetchone()
        return Job.of(row) if row else None

    # --- writes --------------------------------------------------------------------------------

    def add(self, path: str, sha256: str, name: str | None, state: State, *, reason: str | None = None,
            diagnostics: list | None = None, depends_on: list[str] | None = None) -> Job:
        now = time.time()
        cursor = self.connection.execute(
            "INSERT OR IGNORE INTO jobs (path, sha256, name, state, reason, diagnostics, depends_on, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, sha256, name, state.value, reason, json.dumps(diagnostics) if diagnostics else None,
             json.dumps(depends_on or []), now, now))
        if cursor.rowcount == 0:
            return self.find(path, sha256)
        return self.get(cursor.lastrowid)

    def update(self, job_id: int, *, expect: State | tuple[State, ...] | None = None, **fields) -> bool:
        """Change fields of a row; with `expect`, only if it is still in that state (compare-and-set)."""
        fields["updated_at"] = time.time()
        for key, value in list(fields.items()):
            if isinstance(value, Enum):
                fields[key] = value.value
            elif isinstance(value, (list, dict)):
                fields[key] = json.dumps(value)
        assignments = ", ".join(f"{key} = ?" for key in fields)
        query, parameters = f"UPDATE jobs SET {assignments} WHERE id = ?", [*fields.values(), job_id]
        if expect is not None:
            expected = expect if isinstance(expect, tuple) else (expect,)
            query += f" AND state IN ({','.join('?' * len(expected))})"
            parameters += [state.value for state in expected]
        return self.connection.execute(query, parameters).rowcount == 1
