"""`runner watch --executor slurm`: the daemon's jobs as Slurm jobs on the real one-node cluster of
scripts/slurm-up (the `cluster` fixture), training the tiny model; and the pieces that need no cluster."""

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.daemon import store as store_module
from runner.daemon.slurm_executor import exit_status
from runner.daemon.states import State
from runner.daemon.store import Store
from runner.launch import slurm
from runner.manifest import Manifest
from tests.daemon.harness import Daemon, handle, spec_text, wait_until

SHORT = "training: {max_steps: 2, batch_size: 4}\nhardware: {device: cpu}\n"
LONG = ("training: {max_steps: 100000, batch_size: 2}\noutputs: {checkpoint_every: 100000}\n"
        "hardware: {device: cpu}\n")


@pytest.fixture
def slurm_daemon(cluster, tmp_path, tiny_model_dir):
    """A real `runner watch --executor slurm` (real runner, tiny model); afterwards no job of its is left in
    Slurm, whatever the test did."""
    created = Daemon(tmp_path, None, {**os.environ})
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
    (tmp_path / "slurm.yaml").write_text("cpus_per_process: 1\n")  # the test node has 2 CPUs
    yield created
    created.stop(signal.SIGKILL)
    for job in created.jobs():
        if handle(job, "slurm_job"):
            slurm.cancel(handle(job, "slurm_job"))


def start(daemon: Daemon) -> None:
    daemon.start("--executor", "slurm", "--slurm-config", str(daemon.folder.parent / "slurm.yaml"))


def slurm_ids(daemon: Daemon, event: str) -> list[str]:
    return [record["slurm_job"] for record in daemon.events() if record["event"] == event]


def manifests(daemon: Daemon, name: str) -> list[Manifest]:
    return [Manifest.model_validate_json(path.read_text())
            for path in (daemon.state / "runs" / name).glob("*/manifest.json")]


def queued_in_slurm(slurm_job: str) -> bool:
    listed = subprocess.run(["squeue", "-h", "-j", slurm_job, "-o", "%i"], capture_output=True, text=True)
    return listed.stdout.strip() == slurm_job


@pytest.mark.slow
def test_a_dropped_spec_runs_as_a_slurm_job_and_succeeds_with_one_manifest(slurm_daemon):
    start(slurm_daemon)
    (slurm_daemon.folder / "short.yaml").write_text(spec_text("short", SHORT))
    (job,) = slurm_daemon.all_terminal(1, timeout=180)
    assert job.state == State.SUCCEEDED, job.reason
    (started,) = slurm_ids(slurm_daemon, "job_started")
    assert handle(job, "slurm_job") == started and handle(job, "pid") is None
    assert slurm.status(started).state == "COMPLETED" and not queued_in_slurm(started)
    (manifest,) = manifests(slurm_daemon, "short")
    assert manifest.state == "succeeded" and manifest.metrics.steps == 2 and len(manifest.attempts) == 1
    assert Path(job.run_dir) == slurm_daemon.state / "runs" / "short" / manifest.run_id
    (submission,) = (slurm_daemon.state / "runs" / "short" / "slurm").iterdir()
    assert (submission / f"slurm-{started}.out").is_file()
    log = (slurm_daemon.state / "logs" / f"{job.id}.log").read_text()
    assert f"[slurm] job {started}: its output" in log and "short: SUCCEEDED" in log  # the job's output, copied
    described = json.loads((slurm_daemon.state / "daemon.json").read_text())
    assert described["executor"] == "slurm" and described["cpu_job"] is None


@pytest.mark.slow
def test_a_killed_daemon_adopts_its_slurm_jobs_and_nothing_runs_twice(slurm_daemon):
    start(slurm_daemon)
    (slurm_daemon.folder / "adopted.yaml").write_text(spec_text("adopted", SHORT))
    (job,) = slurm_daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, 120, "submitted")
    slurm_daemon.stop(signal.SIGKILL)
    assert queued_in_slurm(handle(job, "slurm_job"))  # the job lives on in Slurm
    start(slurm_daemon)
    (job,) = slurm_daemon.all_terminal(1, timeout=180)
    assert job.state == State.SUCCEEDED and job.attempts == 1, job.reason
    assert slurm_ids(slurm_daemon, "job_started") == [handle(job, "slurm_job")] == slurm_ids(slurm_daemon,
                                                                                             "job_adopted")

    # It finished while the daemon was down: its end is recorded, never run again.
    (slurm_daemon.folder / "finished.yaml").write_text(spec_text("finished", SHORT))
    jobs = slurm_daemon.wait_for(lambda jobs: any(j.name == "finished" and j.state == State.RUNNING for j in jobs),
                                 120, "submitted")
    slurm_job = handle(next(j for j in jobs if j.name == "finished"), "slurm_job")
    slurm_daemon.stop(signal.SIGKILL)
    wait_until(lambda: not queued_in_slurm(slurm_job), 180, "the Slurm job's end")
    start(slurm_daemon)
    finished = next(j for j in slurm_daemon.all_terminal(2, timeout=60) if j.name == "finished")
    assert finished.state == State.SUCCEEDED and finished.attempts == 1, finished.reason
    assert slurm_ids(slurm_daemon, "job_started") == [handle(job, "slurm_job"), slurm_job]
    for name in ("adopted", "finished"):
        (manifest,) = manifests(slurm_daemon, name)
        assert manifest.state == "succeeded" and len(manifest.attempts) == 1
        assert len(list((slurm_daemon.state / "runs" / name / "slurm").iterdir())) == 1  # one submission


@pytest.mark.slow
def test_a_lost_store_never_submits_a_queued_slurm_job_again(slurm_daemon):
    start(slurm_daemon)
    (slurm_daemon.folder / "lost.yaml").write_text(spec_text("lost", SHORT.replace("max_steps: 2", "max_steps: 30")))
    (job,) = slurm_daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, 120, "submitted")
    slurm_daemon.stop(signal.SIGKILL)
    for suffix in ("", "-wal", "-shm"):  # the store is lost; the Slurm job is not
        (slurm_daemon.state / f"{store_module.STORE_FILE}{suffix}").unlink(missing_ok=True)
    assert queued_in_slurm(handle(job, "slurm_job"))
    start(slurm_daemon)
    (again,) = slurm_daemon.all_terminal(1, timeout=180)
    assert again.state == State.SUCCEEDED and handle(again, "slurm_job") == handle(job, "slurm_job"), again.reason
    assert set(slurm_ids(slurm_daemon, "job_started")) == {handle(job, "slurm_job")}
    (manifest,) = manifests(slurm_daemon, "lost")
    assert manifest.state == "succeeded" and len(manifest.attempts) == 1
    assert len(list((slurm_daemon.state / "runs" / "lost" / "slurm").iterdir())) == 1


def last_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_a_warm_stop_checkpoints_the_slurm_job_the_next_start_resumes_it_and_cancel_ends_it(slurm_daemon):
    start(slurm_daemon)
    (slurm_daemon.folder / "long.yaml").write_text(spec_text("long", LONG))
    (job,) = slurm_daemon.wait_for(lambda jobs: jobs and jobs[0].run_dir and last_step(Path(jobs[0].run_dir)),
                                   180, "training")
    assert slurm_daemon.stop(signal.SIGTERM) == 0
    (job,) = slurm_daemon.jobs()
    assert job.state == State.RECOVERING and not queued_in_slurm(handle(job, "slurm_job"))
    (checkpoint,) = (Path(job.run_dir) / "checkpoints").glob("checkpoint-*/trainer_state.json")
    stopped_at = int(checkpoint.parent.name.split("-")[1])

    start(slurm_daemon)  # submitted again: the run resumes from its checkpoint
    slurm_daemon.wait_for(lambda jobs: jobs[0].state == State.RUNNING and last_step(Path(job.run_dir)) > stopped_at,
                          180, "training resumed")
    code, out = slurm_daemon.cli("cancel", "long")
    assert code == 0, out
    (job,) = slurm_daemon.all_terminal(1, timeout=120)
    assert job.state == State.CANCELLED and job.attempts == 2
    first, second = slurm_ids(slurm_daemon, "job_started")
    assert handle(job, "slurm_job") == second != first and not queued_in_slurm(second)
    (manifest,) = manifests(slurm_daemon, "long")
    assert [attempt.state for attempt in manifest.attempts] == ["interrupted", "interrupted"]
    assert manifest.attempts[1].resumed_from_step == stopped_at


@pytest.mark.slow
def test_a_plan_on_two_nodes_is_refused_by_the_local_executor_and_submitted_by_the_slurm_one(slurm_daemon, tmp_path):
    (slurm_daemon.folder / "wide.yaml").write_text(spec_text("wide", "hardware: {device: cpu, nodes: 2}\n"))
    slurm_daemon.start()
    (job,) = slurm_daemon.all_terminal(1, timeout=120)
    assert (job.state, job.failure, job.attempts) == (State.FAILED, "plan", 0)
    assert "runs on 2 nodes; this daemon runs its jobs on this machine only" in job.reason
    assert "--executor slurm" in job.hint
    slurm_daemon.stop()

    on_slurm = Daemon(tmp_path, None, {**os.environ}, state=tmp_path / "slurm-state")
    start(on_slurm)
    try:
        # this one-node cluster never has two nodes: Slurm keeps it pending, the daemon says why
        (job,) = on_slurm.wait_for(lambda jobs: jobs and "queued in Slurm" in (jobs[0].reason or ""), 120, "queued")
        assert job.state == State.RUNNING and job.reason == f"queued in Slurm as job {handle(job, 'slurm_job')} (PartitionConfig)"
        (submission,) = (on_slurm.state / "runs" / "wide" / "slurm").iterdir()
        assert "#SBATCH --nodes=2" in (submission / "job.sbatch").read_text().splitlines()
        code, out = on_slurm.cli("cancel", "wide")  # a pending job has nothing to checkpoint: cancelled at once
        assert code == 0, out
        (job,) = on_slurm.all_terminal(1, timeout=30)
    finally:
        on_slurm.stop(signal.SIGKILL)
        for left in on_slurm.jobs():
            if handle(left, "slurm_job"):
                slurm.cancel(handle(left, "slurm_job"))
    assert job.state == State.CANCELLED and slurm.status(handle(job, "slurm_job")).state == "CANCELLED"


def test_slurm_ends_read_as_exit_statuses():
    def end(state, code="0:0"):
        return exit_status(slurm.JobStatus("1", state, "", code, "", None))

    assert end("COMPLETED") == 0
    assert end("FAILED", "130:0") == 130  # runner stopped by the warm stop, or a failed run
    assert end("FAILED", "0:9") == -signal.SIGKILL
    assert end("CANCELLED", "0:15") == -signal.SIGTERM == end("CANCELLED")  # scancel, also of a pending job
    assert end("TIMEOUT") == end("NODE_FAIL") == end("PREEMPTED") == -1  # not the run's doing: resume


def test_slurm_settings_without_the_slurm_executor_are_refused(tmp_path, capsys):
    assert main(["watch", str(tmp_path), "--state-dir", str(tmp_path / "state"), "--partition", "gpu"]) == 2
    assert "--partition: for --executor slurm only" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


LAYOUT_3 = """CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, name TEXT,
    state TEXT NOT NULL, step TEXT, priority INTEGER NOT NULL DEFAULT 0, failure TEXT, reason TEXT, hint TEXT,
    diagnostics TEXT, depends_on TEXT, attempts INTEGER NOT NULL DEFAULT 0, plan_path TEXT, estimate_bytes INTEGER,
    devices INTEGER, device_type TEXT, run_dir TEXT, pid INTEGER, pid_start TEXT, gpus TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, withdrawn INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL, UNIQUE (sha256));
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_name ON jobs (name);
CREATE INDEX jobs_path ON jobs (path);"""
"""The store's layout 3 (runner d2bc31a), before Slurm jobs had a place in it."""


def test_a_store_of_layout_3_records_slurm_jobs_and_keeps_its_jobs(tmp_path):
    connection = sqlite3.connect(tmp_path / store_module.STORE_FILE, isolation_level=None)
    connection.executescript(LAYOUT_3)
    for number, (state, step) in enumerate((("cancelled", None), ("queued", "resources"))):
        connection.execute("INSERT INTO jobs (path, sha256, state, step, created_at, updated_at) "
                           "VALUES (?, ?, ?, ?, 0, 0)", (f"{number}.yaml", f"{number}", state, step))
    connection.execute("PRAGMA user_version=3")
    connection.close()
    store, moved = Store.for_daemon(tmp_path)
    try:
        cancelled, planned = store.jobs()
        assert moved is None and cancelled.state == State.CANCELLED and handle(cancelled, "slurm_job") is None
        assert store.start(planned, "slurm", {"slurm_job": "42"}) and handle(store.get(planned.id), "slurm_job") == "42"
    finally:
        store.close()
