"""The store: never created by the commands that read it, read-only for readers, moved aside (never
emptied) when it cannot be read, and locked against a second daemon by the OS (issue 10)."""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from runner.cli import main
from runner.daemon import states
from runner.daemon.store import Store, StoreUnreadable, lock_folders
from runner.errors import RunnerError
from runner.plan.models import Plan
from tests.conftest import REPO


@pytest.mark.parametrize("command", [["status"], ["cancel", "x"], ["retry", "x"], ["logs", "x"]])
def test_readers_never_make_a_store(tmp_path, capsys, command):
    for state, message in ((tmp_path / "typo", "is not a folder"), ("/dev/null", "is not a folder")):
        assert main([*command, "--state-dir", str(state)]) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    assert main([*command, "--state-dir", str(tmp_path / "empty")]) == 1
    assert "no runner store in" in capsys.readouterr().err and not list((tmp_path / "empty").iterdir())


def test_watch_refuses_a_state_dir_that_is_a_file(tmp_path, capsys):
    assert main(["watch", str(tmp_path), "--state-dir", "/dev/null"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_unreadable_store_is_moved_aside_never_emptied(tmp_path):
    (tmp_path / "runner.db").write_bytes(b"garbage" * 1000)
    store, moved = Store.for_daemon(tmp_path)
    assert "moved aside" in moved and store.jobs() == []
    (aside,) = tmp_path.glob("runner.db.unreadable-*")
    assert aside.read_bytes() == b"garbage" * 1000
    store.close()


def test_a_store_of_another_layout_is_moved_aside(tmp_path):
    connection = sqlite3.connect(tmp_path / "runner.db")
    connection.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(RunnerError, match="layout 0"):
        Store.existing(tmp_path, writable=False)
    store, moved = Store.for_daemon(tmp_path)
    assert "layout 0" in moved
    store.close()


def test_an_empty_store_file_is_refused_by_readers_and_reused_by_the_daemon(tmp_path):
    (tmp_path / "runner.db").write_bytes(b"")
    with pytest.raises(RunnerError, match="it is empty"):
        Store.existing(tmp_path, writable=False)
    store, moved = Store.for_daemon(tmp_path)
    assert moved is None
    store.close()
    with pytest.raises(StoreUnreadable):
        raise StoreUnreadable("a RunnerError the commands report")


def test_a_deleted_store_is_written_back_from_the_open_one(tmp_path):
    store, _ = Store.for_daemon(tmp_path)
    job = store.add(str(tmp_path / "a.yaml"), "0" * 64, "a", states.CHECKING)
    (tmp_path / "runner.db").unlink()
    assert store.replaced()
    assert "written back" in store.restore()
    assert not store.replaced() and store.get(job.id).name == "a"
    reader = Store.existing(tmp_path, writable=False)
    assert [j.name for j in reader.jobs()] == ["a"]
    reader.close()
    store.close()


def test_the_locks_are_on_the_folders_themselves(tmp_path):
    state, watched, runs = (tmp_path / name for name in ("state", "watched", "runs"))
    for folder in (state, watched, runs):
        folder.mkdir()
    held = lock_folders({"state dir": state, "watched folder": watched, "run root": state})  # one folder, twice
    try:
        for other in ({"state dir": tmp_path / "other", "watched folder": watched},
                      {"state dir": tmp_path / "other", "run root": state}):
            (tmp_path / "other").mkdir(exist_ok=True)
            with pytest.raises(RunnerError, match="another runner watch already uses"):
                lock_folders(other)
        for descriptor in lock_folders({"state dir": tmp_path / "other", "run root": runs}):
            os.close(descriptor)
    finally:
        for descriptor in held:
            os.close(descriptor)
    for descriptor in lock_folders({"state dir": state, "watched folder": watched}):
        os.close(descriptor)


def as_user(user: int, groups: list[str], *arguments: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m runner ARGUMENTS` as another user (setpriv), from this checkout."""
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", *groups, sys.executable, "-m", "runner",
                           *arguments], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}, **kwargs)


@pytest.fixture
def other_user():
    """Root, setpriv, and a checkout and interpreter that another user may read; else the test cannot run."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to act as another user")
    probe = as_user(4243, ["--clear-groups"], "--version")
    if probe.returncode != 0:
        pytest.skip(f"another user cannot run runner from this checkout (a private folder?): {probe.stderr.strip()}")


def test_a_member_of_the_daemons_group_reads_status_without_write_access(other_user):
    tmp_path = Path(tempfile.mkdtemp(prefix="runner-group-"))  # pytest's tmp_path is private to root
    os.chmod(tmp_path, 0o755)
    state = tmp_path / "state"
    state.mkdir()
    store, _ = Store.for_daemon(state)
    store.add(str(tmp_path / "a.yaml"), "0" * 64, "shared-job", states.CHECKING)
    group, user = 4242, 4243

    def as_member(*arguments: str) -> subprocess.CompletedProcess:
        for path in (state, *state.iterdir()):
            os.chown(path, 0, group)
            os.chmod(path, 0o750 if path.is_dir() else 0o640)
        return as_user(user, [f"--groups={group}"], *arguments, "--state-dir", str(state), env={"HOME": str(tmp_path)})

    try:
        while_running = as_member("status")  # the daemon holds the store open: its WAL files exist
        store.close()
        while_stopped = as_member("status")  # no WAL files, and no right to create them
        cancel = as_member("cancel", "shared-job")
    finally:
        shutil.rmtree(tmp_path)
    for completed in (while_running, while_stopped):
        assert completed.returncode == 0 and "shared-job" in completed.stdout, completed.stderr
    assert cancel.returncode == 1 and "you may read but not change" in cancel.stderr


def test_someone_outside_the_group_gets_a_message_not_a_traceback(tmp_path, other_user):
    store, _ = Store.for_daemon(tmp_path)
    store.close()
    os.chmod(tmp_path, 0o700)
    completed = as_user(4243, ["--clear-groups"], "status", "--state-dir", str(tmp_path / "x"))
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert "Permission denied" in completed.stderr and "daemon's group" in completed.stderr, completed.stderr


FIXTURES = Path(__file__).parent / "fixtures"
OLD_ROOT = "/FIXTURE"
"""The folder the old stores' paths start with (tests/daemon/fixtures/old_store.py)."""


def old_store(layout: int, state: Path, root: Path) -> None:
    """The store an older runner wrote (tests/daemon/fixtures), as the state dir's store, its paths under `root`."""
    state.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / f"store-layout-{layout}.db", state / "runner.db")
    connection = sqlite3.connect(state / "runner.db", isolation_level=None)
    connection.execute("UPDATE jobs SET path = replace(path, ?1, ?2), plan_path = replace(plan_path, ?1, ?2), "
                       "run_dir = replace(run_dir, ?1, ?2)", (OLD_ROOT, str(root)))
    connection.close()


@pytest.mark.parametrize("layout", [4, 5])
def test_a_store_of_an_older_layout_moves_its_runs_handles_into_executions(tmp_path, layout):
    old_store(layout, tmp_path, tmp_path)
    store, moved = Store.for_daemon(tmp_path)
    try:
        jobs = {job.name: job for job in store.jobs()}
        columns = {row[1] for row in store.connection.execute("PRAGMA table_info(jobs)")}
        version = store.connection.execute("PRAGMA user_version").fetchone()[0]
        executions = {name: store.executions(job.id) for name, job in jobs.items()}
    finally:
        store.close()
    assert moved is None and version == 6 and not columns & {"pid", "pid_start", "slurm_job"}
    assert {name: (job.state.value, job.failure, job.attempts) for name, job in jobs.items()} == {
        "succeeded": ("succeeded", None, 1), "failed": ("failed", "oom", 1), "adopted": ("running", None, 1),
        "vanished": ("running", None, 1), "recovering": ("recovering", None, 1), "slurm-running": ("running", None, 1),
        "slurm-done": ("succeeded", None, 1), "waiting": ("cancelled", None, 0), None: ("invalid", None, 0)}
    assert jobs["failed"].hint == "lower training.batch_size" and jobs[None].diagnostics[0]["summary"] == "unknown key"
    # a running job's start is open, with its handle: the next daemon adopts it through it
    assert [(e.attempt, e.executor, e.handle, e.running) for e in executions["adopted"]] == [
        (1, "local", {"pid": 999_003, "pid_start": "0"}, True)]
    assert [(e.executor, e.handle, e.running) for e in executions["slurm-running"]] == [
        ("slurm", {"slurm_job": "4242"}, True)]
    assert [(e.executor, e.handle, e.outcome, e.ended_at) for e in executions["slurm-done"]] == [
        ("slurm", {"slurm_job": "4241"}, "succeeded", jobs["slurm-done"].finished_at)]
    # a local run that ended had lost its pid already: nothing is made up
    assert executions["succeeded"] == executions["recovering"] == executions["waiting"] == []
    assert jobs["adopted"].running_execution == executions["adopted"][0] and jobs["succeeded"].execution is None


def test_a_daemon_upgraded_over_an_older_store_adopts_its_live_run_and_resumes_the_lost_ones(daemon, tmp_path,
                                                                                             plan_template):
    """The store of a runner of layout 4 (7d71bf9), left by a daemon that died with a run alive: the new daemon
    adopts that run (never starting it again), resumes the runs that vanished or were stopped, and keeps the
    jobs that ended as they were."""
    from runner.daemon import children
    from tests.daemon.harness import FAKE, ledger

    old_store(4, daemon.state, tmp_path)
    template = Plan.model_validate_json(plan_template.read_text())
    plans = {}
    for number, name in ((3, "adopted"), (4, "vanished"), (5, "recovering"), (6, "slurm-running")):
        sha256 = f"{number:064x}"
        plans[name] = daemon.state / "plans" / f"{number}.json"
        plans[name].parent.mkdir(exist_ok=True)
        plans[name].write_text(template.model_copy(update={
            "name": name, "spec": {**template.spec, "description": "# fake-seconds: 3\n" if name == "adopted" else ""},
            "inputs": template.inputs.model_copy(update={
                "spec_path": str(daemon.state / "snapshots" / f"{sha256}.yaml"),
                "spec_source": str(daemon.folder / f"{name}.yaml"), "spec_sha256": sha256})}).model_dump_json())
    alive = subprocess.Popen([*FAKE, "run", "--plan", str(plans["adopted"]), "--runs-dir", str(daemon.state)],
                             env=daemon.env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        connection = sqlite3.connect(daemon.state / "runner.db", isolation_level=None)
        connection.execute("UPDATE jobs SET pid = ?, pid_start = ? WHERE name = 'adopted'",
                           (alive.pid, children.process_start_time(alive.pid)))
        connection.close()
        daemon.start("--runs-dir", str(daemon.state))
        jobs = {job.name: job for job in daemon.all_terminal(9)}
    finally:
        alive.wait(timeout=60)
    assert {name: (job.state.value, job.attempts) for name, job in jobs.items()} == {
        "succeeded": ("succeeded", 1), "failed": ("failed", 1), "adopted": ("succeeded", 1),
        "vanished": ("succeeded", 2), "recovering": ("succeeded", 2), "slurm-running": ("succeeded", 2),
        "slurm-done": ("succeeded", 1), "waiting": ("cancelled", 0), None: ("invalid", 0)}
    events = daemon.events()
    assert [(e["job"], e["pid"]) for e in events if e["event"] == "job_adopted"] == [(jobs["adopted"].id, alive.pid)]
    assert sorted(e["name"] for e in events if e["event"] == "job_started") == ["recovering", "slurm-running",
                                                                                 "vanished"]
    assert sorted(entry["content"][-1] for entry in ledger(tmp_path)) == ["3", "4", "5", "6"]  # each ran once
    reader = Store.existing(daemon.state, writable=False)
    try:
        executions = {name: reader.executions(job.id) for name, job in jobs.items()}
    finally:
        reader.close()
    assert [(e.executor, e.outcome) for e in executions["adopted"]] == [("local", "succeeded")]
    assert [(e.attempt, e.executor, e.outcome) for e in executions["vanished"]] == [
        (1, "local", "recovering"), (2, "local", "succeeded")]
    # a Slurm job the old daemon ran is no local child: this daemon (--executor local) resumes it, as before
    assert [(e.executor, e.outcome) for e in executions["slurm-running"]] == [("slurm", "recovering"),
                                                                              ("local", "succeeded")]
    code, shown = daemon.cli("status")
    assert code == 0 and "failed (oom)" in shown, shown


def test_each_start_is_an_execution_that_leaving_running_ends(tmp_path):
    store, _ = Store.for_daemon(tmp_path)
    try:
        job = store.add(str(tmp_path / "a.yaml"), "0" * 64, "a", states.CHECKING)
        assert store.move(job, states.PLANNING) and store.move(store.get(job.id), states.RESOURCES)
        job = store.get(job.id)
        assert store.start(job, "local", {"pid": 4321, "pid_start": "99"}, gpus="0", reason="running")
        assert not store.start(job, "local", {"pid": 1, "pid_start": "1"})  # moved meanwhile: no second start
        job = store.get(job.id)
        assert (job.state, job.attempts, job.execution.attempt, job.execution.handle) == (
            states.State.RUNNING, 1, 1, {"pid": 4321, "pid_start": "99"}) and job.running_execution
        assert store.move(job, states.FAILED, exit_code=1, failure="oom", reason="out of memory")
        assert store.move(store.get(job.id), states.PLANNING, attempts=0)  # runner retry: a new budget
        job = store.get(job.id)
        assert store.move(job, states.RESOURCES) and store.start(store.get(job.id), "slurm", {"slurm_job": "7"})
        job = store.get(job.id)
        first, second = store.executions(job.id)
        assert (first.attempt, first.exit, first.outcome, first.failure) == (1, 1, "failed", "oom")
        assert first.ended_at is not None and job.execution == second and job.attempts == 1
        assert (second.attempt, second.executor, second.handle, second.running) == (2, "slurm", {"slurm_job": "7"}, True)
        assert store.move(job, states.RECOVERING) and store.get(job.id).execution.outcome == "recovering"
        assert store.get(job.id).running_execution is None and store.get(job.id).to_json()["execution"]["attempt"] == 2
    finally:
        store.close()
