"""The daemon against the cases that lost jobs or ran them twice (issue 10), with real processes:
a `runner watch` subprocess and fake runner children (tests/daemon/fake_runner.py) that write real
manifests and a ledger line per start."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runner.daemon.states import State
from tests.daemon.harness import Daemon, ledger, sha256, spec_text, wait_until


def by_content(jobs) -> dict:
    return {job.sha256: job for job in jobs}


def test_a_run_that_finishes_while_the_daemon_is_down_is_recorded_not_run_again(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "job.yaml").write_text(spec_text("job", "# fake-seconds: 2\n"))
    (job,) = daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING and jobs[0].run_dir, what="running")
    daemon.stop(signal.SIGKILL)  # the child lives on, and finishes while no daemon watches
    manifest = Path(job.run_dir) / "manifest.json"
    wait_until(lambda: json.loads(manifest.read_text())["state"] == "succeeded", what="the run to finish")
    daemon.start()
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED and "finished while the daemon was down" in job.reason
    assert len(ledger(tmp_path)) == 1


def test_a_spec_overwritten_while_planning_runs_what_was_admitted(daemon, tmp_path):
    daemon.start()
    path = daemon.folder / "job.yaml"
    first, second = spec_text("job", "# fake-plan-seconds: 3\n"), spec_text("job", "# the second version\n")
    path.write_text(first)
    daemon.wait_for(lambda jobs: jobs and jobs[0].reason == "being planned", what="planning")
    path.write_text(second)
    jobs = by_content(daemon.all_terminal(2))
    assert jobs[sha256(first)].state == State.CANCELLED and "superseded" in jobs[sha256(first)].reason
    assert jobs[sha256(second)].state == State.SUCCEEDED
    assert [entry["content"] for entry in ledger(tmp_path)] == [sha256(second)]


def test_a_b_a_while_queued_runs_a_once_and_b_never(daemon, tmp_path):
    daemon.start()
    blocker = spec_text("blocker", "# fake-seconds: 60\n")
    (daemon.folder / "blocker.yaml").write_text(blocker)
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="the blocker running")
    wait_until(lambda: ledger(tmp_path), what="the blocker's run started")  # not killed before it began
    path = daemon.folder / "job.yaml"
    a, b = spec_text("job", "# version a\n"), spec_text("job", "# version b\n")

    def waiting(text):
        return lambda jobs: any(j.sha256 == sha256(text) and j.state == State.QUEUED and j.estimate_bytes
                                for j in jobs)

    path.write_text(a)
    daemon.wait_for(waiting(a), what="a planned and waiting")
    path.write_text(b)
    daemon.wait_for(waiting(b), what="b planned and waiting")
    path.write_text(a)
    daemon.wait_for(waiting(a), what="a back")
    assert daemon.cli("cancel", "blocker")[0] == 0
    jobs = by_content(daemon.all_terminal(3))
    assert jobs[sha256(a)].state == State.SUCCEEDED
    assert jobs[sha256(b)].state == State.CANCELLED and "superseded" in jobs[sha256(b)].reason
    assert [entry["content"] for entry in ledger(tmp_path)] == [sha256(blocker), sha256(a)]


def test_a_renamed_running_spec_is_the_same_job(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "before.yaml").write_text(spec_text("renamed", "# fake-seconds: 3\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="running")
    os.rename(daemon.folder / "before.yaml", daemon.folder / "after.yaml")
    wait_until(lambda: any(e["event"] == "job_moved" for e in daemon.events()), what="the move noticed")
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED and job.path == str(daemon.folder / "after.yaml")
    assert len(ledger(tmp_path)) == 1


def test_the_same_content_under_four_paths_is_one_job(daemon, tmp_path):
    daemon.start()
    text = spec_text("same")
    (daemon.folder / "sub").mkdir()
    for name in ("a.yaml", "b.yaml", "sub/c.yaml", "sub/d.yaml"):
        (daemon.folder / name).write_text(text)
    wait_until(lambda: sum(e["event"] == "spec_duplicate" for e in daemon.events()) == 3, what="three duplicates")
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED and len(ledger(tmp_path)) == 1


def test_the_store_deleted_garbled_or_emptied_is_rebuilt_from_the_runs(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "first.yaml").write_text(spec_text("first"))
    daemon.all_terminal(1)
    (daemon.folder / "second.yaml").write_text(spec_text("second", "# fake-seconds: 3\n"))
    daemon.wait_for(lambda jobs: any(j.name == "second" and j.state == State.RUNNING for j in jobs), what="running")
    (daemon.state / "runner.db").unlink()
    jobs = daemon.all_terminal(2)
    assert {job.state for job in jobs} == {State.SUCCEEDED}
    assert any(e["event"] == "store_restored" for e in daemon.events())
    assert daemon.stop() == 0

    (daemon.state / "runner.db").write_bytes(b"not a database\n" * 1000)
    code, output = daemon.cli("status")
    assert code == 1 and "cannot be read as a runner store" in output and "Traceback" not in output
    daemon.start()
    jobs = daemon.all_terminal(2)
    assert {job.state for job in jobs} == {State.SUCCEEDED}
    assert all("recorded from its run directory" in job.reason for job in jobs)
    assert list(daemon.state.glob("runner.db.unreadable-*"))
    assert daemon.stop() == 0

    (daemon.state / "runner.db").write_bytes(b"")
    daemon.start()
    assert {job.state for job in daemon.all_terminal(2)} == {State.SUCCEEDED}
    assert len(ledger(tmp_path)) == 2  # nothing ran twice


def test_two_specs_with_one_name_and_job_references_stay_in_their_folder(daemon, tmp_path):
    daemon.start()
    other = daemon.folder / "other"
    other.mkdir()
    for shared in ("model", "data"):
        (other / shared).symlink_to(daemon.folder / shared)
    (other / "g02.yaml").write_text(spec_text("g02"))
    daemon.all_terminal(1)
    (daemon.folder / "g02.yaml").write_text(spec_text("g02", "# another spec of the same name\n"))
    jobs = daemon.all_terminal(2)
    clash = next(job for job in jobs if job.path == str(daemon.folder / "g02.yaml"))
    assert clash.state == State.INVALID and "already used by other/g02.yaml (job #1)" in clash.reason
    code, output = daemon.cli("status")
    assert code == 0 and "already used by other/g02.yaml" in output
    # `{job: g02}` in specs/ names specs/g02.yaml: the run of other/g02.yaml is another spec's
    (daemon.folder / "uses.yaml").write_text(spec_text("uses").replace("base_model: ./model", "base_model: {job: g02}"))
    jobs = daemon.wait_for(lambda jobs: any(j.name == "uses" and j.reason == "waiting for g02 to succeed"
                                            for j in jobs), what="uses waiting")
    assert len(ledger(tmp_path)) == 1


def test_an_error_handling_one_job_fails_that_job_and_the_others_go_on(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "broken.yaml").write_text(spec_text("broken", "# fake-plan: garbage\n"))
    (daemon.folder / "fine.yaml").write_text(spec_text("fine"))
    jobs = {job.name: job for job in daemon.all_terminal(2)}
    assert jobs["fine"].state == State.SUCCEEDED
    assert jobs["broken"].state == State.FAILED and jobs["broken"].reason.startswith(
        "the daemon could not handle this job: RunnerError:") and "is not a runner plan" in jobs["broken"].reason


def test_a_second_daemon_on_the_same_state_is_refused(daemon):
    daemon.start()
    wait_until(lambda: (daemon.state / "runner.db").exists(), what="the store")
    assert not (daemon.state / "daemon.lock").exists()  # the lock is no file whose deletion admits a second daemon
    second = subprocess.run([*daemon.process.args[:5], "--state-dir", str(daemon.state)], capture_output=True,
                            text=True, env=daemon.env, timeout=60)
    assert second.returncode == 1 and "another runner watch already uses" in second.stderr


def fill(disk: Path) -> Path:
    """Fill the disk completely (every write fails) with one file, returned for deleting."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_pauses_admission_and_the_daemon_lives_on(daemon, tmp_path, small_disk):
    full = Daemon(tmp_path, daemon.command, daemon.env, state=small_disk / "state")
    full.start("--runs-dir", str(tmp_path / "runs"))
    wait_until(lambda: (full.state / "runner.db").exists(), what="the store")
    filler = fill(small_disk)
    (full.folder / "job.yaml").write_text(spec_text("job"))
    wait_until(lambda: any(e.get("event") == "admission_paused" for e in _stdout_events(tmp_path)), what="paused")
    code, output = full.cli("status")
    assert code == 0 and "Admission paused" in output and full.process.poll() is None
    filler.unlink()
    (job,) = full.all_terminal(1)
    assert job.state == State.SUCCEEDED
    assert full.stop() == 0



def test_a_run_that_dies_while_the_disk_is_full_resumes_when_there_is_room(daemon, tmp_path, small_disk):
    """Its log is on the full disk and its last print fails (ENOSPC): it ends with its manifest `running`.
    That end is no verdict on the job: it resumes once there is room, instead of failing for good."""
    full = Daemon(tmp_path, daemon.command, daemon.env, state=small_disk / "state")
    full.start("--runs-dir", str(tmp_path / "runs"))
    (full.folder / "job.yaml").write_text(spec_text("job", "# fake-seconds: 5\n# fake-run: print-last\n"))
    full.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="running")
    filler = fill(small_disk)
    wait_until(lambda: any(e.get("event") == "admission_paused" for e in _stdout_events(tmp_path)), what="paused")
    manifest = wait_until(lambda: next((tmp_path / "runs").rglob("manifest.json"), None), what="the manifest")
    pid = json.loads(manifest.read_text())["attempts"][-1]["pid"]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the run's end (reaped)")
    assert json.loads(manifest.read_text())["state"] == "running"  # it could not say how it ended
    time.sleep(1)  # a few passes of the loop with the disk still full
    filler.unlink()
    (job,) = full.all_terminal(1)
    assert job.state == State.SUCCEEDED and job.attempts == 2, job.reason
    assert [entry["attempt"] for entry in ledger(tmp_path)] == [1, 2]
    assert any(e.get("event") == "job_recovering" for e in _stdout_events(tmp_path))
    assert full.stop() == 0

def _stdout_events(tmp_path: Path) -> list[dict]:
    events = []
    for line in (tmp_path / "daemon.out").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_a_second_daemon_on_the_same_folder_or_run_root_is_refused(daemon, tmp_path):
    """Two daemons with their own state dirs on one folder, or one run root, both ran every spec (issue 20)."""
    daemon.start("--runs-dir", str(tmp_path / "runs"))
    wait_until(lambda: (daemon.state / "runner.db").exists(), what="the store")
    for extra in ([str(daemon.folder)], [str(tmp_path / "elsewhere"), "--runs-dir", str(tmp_path / "runs")]):
        (tmp_path / "elsewhere").mkdir(exist_ok=True)
        second = subprocess.run([*daemon.process.args[:4], *extra, "--state-dir", str(tmp_path / "other-state")],
                                capture_output=True, text=True, env=daemon.env, timeout=60)
        assert second.returncode == 1 and "another runner watch already uses" in second.stderr, second.stderr
