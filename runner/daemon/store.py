"""The daemon's actual state: one SQLite row per spec content (its sha256; the content names
the job, so the same content is one job wherever it lies). The row keeps the path it was last
seen at. Each start of a job's run is a row of `executions` (as rq's executions): its attempt, the
executor that ran it and that executor's handle on it (JSON: a pid and its start time, a Slurm job
id), when it started and ended, its exit status and outcome. A new executor needs no new column.

WAL mode, so `runner status`, `cancel`, `retry` and `logs` read and write safely while the
daemon runs. Every state change is one short transaction. The store is a record that can be
lost: the run directories' manifests are the truth, and the daemon rebuilds what they say
(runner.daemon.ledger). A store that cannot be read is moved aside, never emptied in place.
`runner status` opens it read-only, so reading needs no write access.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from runner.daemon import states
from runner.daemon.states import State, Status, Step
from runner.errors import RunnerError

__all__ = ["Job", "State", "Status", "Step", "Store"]


SCHEMA_VERSION = 6
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    author INTEGER,
    name TEXT,
    state TEXT NOT NULL,
    step TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    failure TEXT,
    reason TEXT,
    hint TEXT,
    diagnostics TEXT,
    depends_on TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    plan_path TEXT,
    estimate_bytes INTEGER,
    devices INTEGER,
    device_type TEXT,
    run_dir TEXT,
    gpus TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    withdrawn INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    UNIQUE (sha256)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs (name);
CREATE INDEX IF NOT EXISTS jobs_path ON jobs (path);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    executor TEXT NOT NULL,
    handle TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    exit INTEGER,
    outcome TEXT,
    failure TEXT
);
CREATE INDEX IF NOT EXISTS executions_job ON executions (job);
"""
EXECUTION_COLUMNS = ("id", "attempt", "executor", "handle", "started_at", "ended_at", "exit", "outcome", "failure")
JOB_QUERY = ("SELECT jobs.*, " + ", ".join(f"executions.{column} AS execution_{column}" for column in EXECUTION_COLUMNS)
             + " FROM jobs LEFT JOIN executions ON executions.id = (SELECT MAX(id) FROM executions WHERE job = jobs.id)")
"""A job with its latest execution."""
STORE_FILE = "runner.db"


@dataclass(frozen=True)
class Execution:
    """One start of a job's run: the n-th (`attempt`, counted over all its starts, retries included), by an
    executor of runner.daemon.executor, with what finds that run again (`handle`)."""

    id: int
    attempt: int
    executor: str
    """Its name in runner.daemon.executor.EXECUTORS."""
    handle: dict
    """The executor's handle on the run (runner.daemon.executor.Executor.handle)."""
    started_at: float
    ended_at: float | None
    """None while it runs (or until a daemon finds out that it ended)."""
    exit: int | None
    """Its exit status as the executor reported it (None: unknown, or it ended while no daemon watched)."""
    outcome: str | None
    """The job's state once it ended: succeeded, failed, cancelled, or recovering (it resumes)."""
    failure: str | None
    """The failure kind when it failed (runner.failures)."""

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @classmethod
    def of(cls, data: dict) -> Execution | None:
        """From a job's row (JOB_QUERY): None when it never started."""
        values = {column: data.pop(f"execution_{column}") for column in EXECUTION_COLUMNS}
        if values["id"] is None:
            return None
        return cls(**{**values, "handle": json.loads(values["handle"])})

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Job:
    id: int
    path: str
    sha256: str
    author: int | None
    """The uid that owned the spec file when its content was found (runner.confine)."""
    name: str | None
    state: State
    step: Step | None
    """Where a queued job is on its way to starting (None for the other states)."""
    priority: int
    """The spec's priority: higher starts first; equal ones in order of arrival."""
    failure: str | None
    reason: str | None
    """One line: why it waits, what it does, or how it ended."""
    hint: str | None
    """What to do about a failure or an invalid spec, when something says."""
    diagnostics: list | None
    depends_on: list[str]
    attempts: int
    """Starts since it was queued (runner retry queues it again): what --max-attempts bounds. Each start is
    also an execution; a job recorded from its run directory counts the manifest's attempts."""
    plan_path: str | None
    estimate_bytes: int | None
    devices: int | None
    device_type: str | None
    run_dir: str | None
    gpus: str | None
    cancel_requested: bool
    withdrawn: bool
    """Cancelled by the daemon because its spec file went away or changed (not by a person): the
    same content coming back (a rename, an undo) revives it."""
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    execution: Execution | None
    """Its latest start (None before its first)."""

    @classmethod
    def of(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["execution"] = Execution.of(data)
        data["state"] = State(data["state"])
        data["step"] = Step(data["step"]) if data["step"] else None
        data["diagnostics"] = json.loads(data["diagnostics"]) if data["diagnostics"] else None
        data["depends_on"] = json.loads(data["depends_on"]) if data["depends_on"] else []
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["withdrawn"] = bool(data["withdrawn"])
        return cls(**data)

    def to_json(self) -> dict:
        record = dict(self.__dict__)
        record["state"] = self.state.value
        record["step"] = self.step.value if self.step else None
        record["execution"] = self.execution.to_json() if self.execution else None
        return record

    @property
    def running_execution(self) -> Execution | None:
        """The start of its run that has not ended (a job running, or left running by a daemon that died)."""
        return self.execution if self.execution is not None and self.execution.running else None

    @property
    def status(self) -> Status:
        return Status(self.state, self.step)


class StoreUnreadable(RunnerError):
    """The store file exists but is not a runner store this version reads."""

    upgradable = False


class StoreOlder(StoreUnreadable):
    """A store of an older layout: the daemon upgrades it in place."""

    upgradable = True


class Store:
    """Open with `Store.for_daemon` (creates, repairs) or `Store.existing` (the commands)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path, self.connection = path, connection
        self.connection.row_factory = sqlite3.Row
        self.identity = _identity(path)

    @classmethod
    def for_daemon(cls, state_dir: Path) -> tuple[Store, str | None]:
        """The daemon's store, created when missing; one that cannot be read (not a database, damaged,
        an older layout) is moved aside and a new one made. Returns (store, what was moved aside)."""
        path = state_dir / STORE_FILE
        try:
            return cls._writable(path), None
        except sqlite3.OperationalError as error:  # cannot be opened (permissions, a folder of that name)
            raise RunnerError(f"cannot open the store {path}: {error}",
                              "the daemon's user must own its state dir") from None
        except (sqlite3.DatabaseError, StoreUnreadable) as error:  # opened, but not a store it can read
            moved = _move_aside(path, str(error))
        return cls._writable(path), moved

    @classmethod
    def _writable(cls, path: Path) -> Store:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            _check(connection, empty_is_readable=True, upgradable=True)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            _upgrade(connection)
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            connection.close()
            raise
        return cls(path, connection)

    @classmethod
    def existing(cls, state_dir: Path, *, writable: bool) -> Store:
        """The store of a daemon that has run with this state dir; never creates one (a mistyped
        --state-dir says so instead of showing an empty store). Read-only opens need no write access
        to the folder or the file (a member of the daemon's group reads status)."""
        path = state_dir / STORE_FILE
        try:
            folder, found = state_dir.is_dir(), path.is_file()
        except OSError as error:
            raise RunnerError(f"cannot read {state_dir}: {error.strerror}",
                              "members of the daemon's group may read its state dir") from None
        if not folder:
            raise RunnerError(f"{state_dir} is not a folder, so it holds no runner store",
                              "give the daemon's --state-dir (or set $RUNNER_STATE_DIR)")
        if not found:
            raise RunnerError(f"no runner store in {state_dir} (runner watch has not run with this state dir)",
                              "give the daemon's --state-dir (or set $RUNNER_STATE_DIR)")
        if writable and not os.access(path, os.W_OK):
            raise RunnerError(f"you may read but not change {path}",
                              "cancel and retry as the daemon's user (sudo -u runner runner ...)")
        connection = None
        try:
            connection = _connect(path, writable)
            _check(connection, empty_is_readable=False)
        except sqlite3.OperationalError as error:  # could not open it (permissions), rather than read it
            raise RunnerError(f"cannot open the store {path}: {error}",
                              "members of the daemon's group may read its state dir") from None
        except (sqlite3.DatabaseError, StoreUnreadable) as error:
            if connection is not None:
                connection.close()
            upgraded = isinstance(error, StoreUnreadable) and error.upgradable
            raise RunnerError(f"{path} cannot be read as a runner store: {error}",
                              "restart the daemon (systemctl restart runner-watch)" if upgraded else
                              "the daemon moves it aside and rebuilds the store from the run directories "
                              "at its next start (systemctl restart runner-watch)") from None
        return cls(path, connection)

    def replaced(self) -> bool:
        """Whether the store file is no longer the one this connection writes (deleted or swapped)."""
        return _identity(self.path) != self.identity

    def restore(self) -> str:
        """Write the open store back to its path after the file was deleted or replaced under the
        daemon: whatever is there now is moved aside first. Returns what happened, for the log."""
        moved = _move_aside(self.path, "it replaced the daemon's store") if self.path.exists() else None
        self.connection.execute("VACUUM INTO ?", (str(self.path),))
        self.connection.close()  # before the new file is opened: the WAL files by its name are the old file's
        for suffix in ("-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        self.connection = self._writable(self.path).connection
        self.identity = _identity(self.path)
        return f"{self.path} was deleted or replaced while the daemon ran; written back from the open store" + (
            f" ({moved})" if moved else "")

    def close(self) -> None:
        self.connection.close()

    # --- reads ---------------------------------------------------------------------------------

    def jobs(self, *states: State) -> list[Job]:
        if states:
            return self._select(f"jobs.state IN ({','.join('?' * len(states))}) ORDER BY jobs.id",
                                [state.value for state in states])
        return self._select("1 ORDER BY jobs.id", [])

    def get(self, job_id: int) -> Job | None:
        """The job of this id (None when there is none: a row forgotten, or an id from a URL)."""
        return next(iter(self._select("jobs.id = ?", [job_id])), None)

    def find(self, sha256: str) -> Job | None:
        """The job of this spec content, wherever it was seen."""
        return next(iter(self._select("jobs.sha256 = ?", [sha256])), None)

    def latest(self, name_or_path: str) -> Job | None:
        """The newest row of a spec, by its name or by its path."""
        for column, value in (("name", name_or_path), ("path", str(Path(name_or_path).resolve()))):
            found = self._select(f"jobs.{column} = ? ORDER BY jobs.id DESC LIMIT 1", [value])
            if found:
                return found[0]
        return None

    def latest_succeeded(self, name: str, folder: str) -> Job | None:
        """The newest succeeded job of the spec called `name` in exactly this folder (a spec of the same
        name in a subfolder is another spec)."""
        jobs = self._select("jobs.name = ? AND jobs.state = 'succeeded' ORDER BY jobs.id DESC", [name])
        return next((job for job in jobs if os.path.dirname(job.path) == folder), None)

    def newest_at(self, path: str) -> Job | None:
        return next(iter(self._select("jobs.path = ? ORDER BY jobs.id DESC LIMIT 1", [path])), None)

    def named(self, name: str) -> list[Job]:
        return self._select("jobs.name = ? ORDER BY jobs.id", [name])

    def executions(self, job_id: int) -> list[Execution]:
        """Every start of a job's run, the first first."""
        columns = ", ".join(f"{column} AS execution_{column}" for column in EXECUTION_COLUMNS)
        rows = self.connection.execute(f"SELECT {columns} FROM executions WHERE job = ? ORDER BY id", (job_id,))
        return [Execution.of(dict(row)) for row in rows]

    def _select(self, where: str, parameters: list) -> list[Job]:
        return [Job.of(row) for row in self.connection.execute(f"{JOB_QUERY} WHERE {where}", parameters)]

    # --- writes --------------------------------------------------------------------------------

    def add(self, path: str, sha256: str, name: str | None, status: Status, *, reason: str | None = None,
            diagnostics: list | None = None, depends_on: list[str] | None = None, **fields) -> Job:
        """A new job in `status` (an edge from no row); the existing one when its content is known."""
        states.check(states.GONE, status)
        now = time.time()
        cursor = self.connection.execute(
            "INSERT OR IGNORE INTO jobs (path, sha256, name, state, step, reason, diagnostics, depends_on, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, sha256, name, status.state.value, status.step.value if status.step else None, reason,
             json.dumps(diagnostics) if diagnostics else None, json.dumps(depends_on or []), now, now))
        if cursor.rowcount == 0:
            return self.find(sha256)
        if fields:
            self.update(cursor.lastrowid, **fields)
        return self.get(cursor.lastrowid)

    def move(self, job: Job, to: State | Status, *, exit_code: int | None = None, **fields) -> bool:
        """Change a job's state: only along an edge of the table (runner.daemon.states), and only if the
        row is still in the state `job` was read in (compare-and-set). False when it had moved meanwhile.
        A job that leaves `running` ends its execution with it (`exit_code`: its exit status, when known)."""
        after = to if isinstance(to, Status) else Status(to)
        states.check(job.status, after)
        with self._transaction():
            moved = self._set(job, state=after.state, step=after.step, **fields)
            if moved and job.state == State.RUNNING:
                self.connection.execute(
                    "UPDATE executions SET ended_at = ?, exit = ?, outcome = ?, failure = ? WHERE job = ? AND "
                    "ended_at IS NULL", (time.time(), exit_code, after.state.value, fields.get("failure"), job.id))
        return moved

    def start(self, job: Job, executor: str, handle: dict, **fields) -> bool:
        """Move a job to `running` as a new start of its run, recorded as an execution of `executor` with its
        handle, in one transaction: a daemon that dies in between leaves neither. False when the job had
        moved meanwhile (a person cancelled it)."""
        states.check(job.status, states.RUNNING)
        now = time.time()
        with self._transaction():
            moved = self._set(job, state=State.RUNNING, step=None, attempts=job.attempts + 1, started_at=now, **fields)
            if moved:
                self.connection.execute(
                    "INSERT INTO executions (job, attempt, executor, handle, started_at) "
                    "SELECT ?, COUNT(*) + 1, ?, ?, ? FROM executions WHERE job = ?",
                    (job.id, executor, json.dumps(handle), now, job.id))
        return moved

    def forget(self, job: Job) -> bool:
        """Delete a row (an edge to no row): content never admitted, or an invalid spec to check again."""
        states.check(job.status, states.GONE)
        query, parameters = self._where("DELETE FROM jobs", job)
        return self.connection.execute(query, parameters).rowcount == 1

    def update(self, job_id: int, *, expect: State | tuple[State, ...] | None = None, **fields) -> bool:
        """Change fields of a row other than its state; with `expect`, only if it is in one of those states."""
        if "state" in fields or "step" in fields:
            raise states.TransitionRefused("a change of state goes through Store.move (the transition table)")
        query, parameters = self._assignments(job_id, fields)
        if expect is not None:
            expected = expect if isinstance(expect, tuple) else (expect,)
            query += f" AND state IN ({','.join('?' * len(expected))})"
            parameters += [state.value for state in expected]
        return self.connection.execute(query, parameters).rowcount == 1

    def _set(self, job: Job, **fields) -> bool:
        query, parameters = self._assignments(job.id, fields)
        query += " AND state = ? AND step IS ?"
        parameters += [job.state.value, job.step.value if job.step else None]
        return self.connection.execute(query, parameters).rowcount == 1

    @contextmanager
    def _transaction(self):
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    @staticmethod
    def _assignments(job_id: int, fields: dict) -> tuple[str, list]:
        fields["updated_at"] = time.time()
        for key, value in list(fields.items()):
            if isinstance(value, Enum):
                fields[key] = value.value
            elif isinstance(value, (list, dict)):
                fields[key] = json.dumps(value)
        assignments = ", ".join(f"{key} = ?" for key in fields)
        return f"UPDATE jobs SET {assignments} WHERE id = ?", [*fields.values(), job_id]

    @staticmethod
    def _where(query: str, job: Job) -> tuple[str, list]:
        return (f"{query} WHERE id = ? AND state = ? AND step IS ?",
                [job.id, job.state.value, job.step.value if job.step else None])


def lock_folders(folders: dict[str, Path]) -> list[int]:
    """Exclusive OS locks (flock) on the daemon's folders themselves ({role: folder}: the state dir, the
    watched folder, the run root), held while the daemon lives: two daemons with their own state dirs on
    one folder or one run root would each run every spec. A lock is no file whose deletion would admit a
    second daemon, and its descriptor is not inherited by children, so a job that outlives its daemon
    never keeps the next one out. Returns the descriptors to keep."""
    held: dict[str, int] = {}
    try:
        for role, folder in folders.items():
            resolved = os.path.realpath(folder)
            if resolved in held:  # one folder in two roles (the run root is the state dir by default)
                continue
            descriptor = os.open(resolved, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            held[resolved] = descriptor
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunnerError(f"another runner watch already uses {folder} (this one's {role})",
                                  "stop it first; two daemons need their own state dir, watched folder and run "
                                  "root") from None
    except BaseException:
        for descriptor in held.values():
            os.close(descriptor)
        raise
    return list(held.values())


def _check(connection: sqlite3.Connection, *, empty_is_readable: bool, upgradable: bool = False) -> None:
    """Raise unless this is a store of this layout (or, where allowed, one the daemon upgrades, or an
    empty database). Reading the header is what tells a garbage file: sqlite opens anything lazily."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    readable = (SCHEMA_VERSION, *UPGRADES) if upgradable else (SCHEMA_VERSION,)
    if version in readable and "jobs" in tables:
        result = connection.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise StoreUnreadable(f"the database is damaged ({result})")
        return
    if version in UPGRADES and "jobs" in tables:
        raise StoreOlder(f"the store has layout {version} (an older runner); the daemon upgrades it in place "
                              "at its next start")
    if tables:
        raise StoreUnreadable(f"the store has layout {version}; this runner reads layout {SCHEMA_VERSION}")
    if not empty_is_readable:
        raise StoreUnreadable("it is empty")


def _executions(connection: sqlite3.Connection) -> None:
    """Layout 5 -> 6: the executor's handle moves from the jobs' columns (pid, pid_start, slurm_job) to an
    execution per job that had one: open for a job still `running` (the next daemon adopts it through it),
    ended with the job's state for the others. A local job that ended had already lost its pid: it keeps its
    attempts and times, and no execution. SQLite before 3.35 cannot drop a column: the table is rebuilt."""
    old = connection.execute("SELECT id, state, failure, attempts, pid, pid_start, slurm_job, started_at, finished_at,"
                             " updated_at FROM jobs WHERE pid IS NOT NULL OR slurm_job IS NOT NULL").fetchall()
    connection.execute("ALTER TABLE jobs RENAME TO jobs_layout_5")
    for index in ("jobs_state", "jobs_name", "jobs_path"):
        connection.execute(f"DROP INDEX {index}")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    columns = ", ".join(row[1] for row in connection.execute("PRAGMA table_info(jobs)"))
    connection.execute(f"INSERT INTO jobs ({columns}) SELECT {columns} FROM jobs_layout_5")
    connection.execute("DROP TABLE jobs_layout_5")
    for job, state, failure, attempts, pid, pid_start, slurm_job, started_at, finished_at, updated_at in old:
        executor, handle = ("slurm", {"slurm_job": slurm_job}) if slurm_job else (
            "local", {"pid": pid, "pid_start": pid_start})
        ended = None if state == State.RUNNING.value else finished_at or updated_at
        connection.execute("INSERT INTO executions (job, attempt, executor, handle, started_at, ended_at, outcome, "
                           "failure) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (job, max(attempts, 1), executor, json.dumps(handle), started_at or updated_at, ended,
                            None if ended is None else state, failure))


UPGRADES = {
    2: ["ALTER TABLE jobs ADD COLUMN step TEXT",
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN hint TEXT",
        # layout 2 kept queued sub-states implicit: planned once it had an estimate
        "UPDATE jobs SET step = CASE WHEN estimate_bytes IS NULL THEN 'planning' ELSE 'resources' END,"
        " plan_path = CASE WHEN estimate_bytes IS NULL THEN NULL ELSE plan_path END WHERE state = 'queued'"],
    3: ["ALTER TABLE jobs ADD COLUMN slurm_job TEXT"],
    4: ["ALTER TABLE jobs ADD COLUMN author INTEGER"],  # jobs found before: planned as the daemon itself
    5: [_executions],
}
"""Layout -> the statements (or a function of the connection) that bring it to the next layout, in one
transaction: a daemon upgrade keeps its store (a job a person cancelled stays cancelled, a running job is
adopted)."""


def _upgrade(connection: sqlite3.Connection) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    while version in UPGRADES:
        connection.execute("BEGIN IMMEDIATE")
        for statement in UPGRADES[version]:
            if callable(statement):
                statement(connection)
            else:
                connection.execute(statement)
        version += 1
        connection.execute(f"PRAGMA user_version={version}")
        connection.execute("COMMIT")


def _connect(path: Path, writable: bool) -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode={'rw' if writable else 'ro'}"
    connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    if writable:
        return connection
    try:
        connection.execute("PRAGMA user_version").fetchone()
        return connection
    except sqlite3.OperationalError:
        connection.close()
        if Path(str(path) + "-wal").exists():
            raise
    except sqlite3.DatabaseError:
        connection.close()
        raise
    # No daemon is writing (its WAL is gone), and a reader without write access to the folder cannot
    # create the shared-memory file a WAL database wants: read the file as it is.
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30, isolation_level=None)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _move_aside(path: Path, why: str) -> str:
    """Rename a store (and its WAL files) out of the way; never delete it: it may be evidence."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.unreadable-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            os.replace(source, Path(str(target) + suffix))
    return f"{path.name} could not be read ({why}); moved aside to {target.name}"
