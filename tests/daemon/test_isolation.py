"""Nothing one spec does stalls the daemon for everyone else (issue 20): a long plan does not hold checks,
a stopped worker is retried rather than blaming the spec, a folder tree a thousand levels deep, a file
name that is not UTF-8 and a folder replaced by a redeploy are each taken in stride."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from runner.daemon.states import State
from tests.daemon.harness import spec_text, wait_until


def _worker_pid(daemon, role: str) -> int:
    """The daemon's checking or planning worker (its environment names its role)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == daemon.process.pid and f"RUNNER_WORKER_ROLE={role}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no {role} worker")


def test_a_long_plan_does_not_hold_back_a_check(daemon):
    daemon.start()
    (daemon.folder / "slow.yaml").write_text(spec_text("slow", "# fake-plan-seconds: 20\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].reason == "being planned", what="the slow plan")
    (daemon.folder / "quick.yaml").write_text(spec_text("quick", "training: {seed: x}\n"))  # invalid
    jobs = daemon.wait_for(lambda jobs: any(j.name is None and j.state == State.INVALID for j in jobs), 15,
                           "the quick spec checked")
    slow = next(job for job in jobs if job.name == "slow")
    assert slow.state == State.QUEUED and slow.reason == "being planned"  # still planning meanwhile


def test_a_stopped_checking_worker_is_a_stall_not_an_invalid_spec(daemon):
    """SIGSTOP (as a read blocked on a hung NFS mount) used to end in `invalid` for good."""
    daemon.start("--stall-seconds", "1")
    wait_until(lambda: _try(lambda: _worker_pid(daemon, "check")), what="the checking worker")
    os.kill(_worker_pid(daemon, "check"), signal.SIGSTOP)
    (daemon.folder / "job.yaml").write_text(spec_text("job"))
    daemon.wait_for(lambda jobs: jobs and "its check stalled" in (jobs[0].reason or ""), 30, "the stall")
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED


def _try(function):
    try:
        return function()
    except AssertionError:
        return None


def _tree(root: Path, name: str, levels: int) -> None:
    """`levels` folders, one in the other (by descriptor: the path is too long to name, and os.makedirs
    recurses)."""
    root.mkdir(exist_ok=True)
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=folder)
        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
        os.close(folder)
        folder = inner
    os.close(folder)


def test_a_folder_tree_a_thousand_levels_deep_stops_nothing(daemon):
    deep = daemon.folder / "deep"
    _tree(deep, "d", 1100)  # there at the start
    daemon.start()
    _tree(deep, "e", 1100)  # and made while it watches
    try:
        (daemon.folder / "job.yaml").write_text(spec_text("job"))
        (job,) = daemon.all_terminal(1)
        assert job.state == State.SUCCEEDED
        assert not [e for e in daemon.events() if e["event"] in ("reconcile_failed", "spec_error")]
    finally:
        daemon.stop()
        for name in ("d", "e"):
            _remove_tree(deep, name)


def _remove_tree(root: Path, name: str) -> None:
    """Undo _tree without recursion (shutil.rmtree recurses, and pytest's cleanup would fail on it): the
    second level moves up and the first is removed, a level at a time."""
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                os.rename(f"{name}/{name}", ".next", src_dir_fd=folder, dst_dir_fd=folder)
            except FileNotFoundError:
                os.rmdir(name, dir_fd=folder)
                return
            os.rmdir(name, dir_fd=folder)
            os.rename(".next", name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


def test_a_spec_file_name_that_is_not_utf8_is_reported_once(daemon):
    daemon.start()
    bad = os.path.join(os.fsencode(daemon.folder), b"bad\xff.yaml")
    with open(bad, "w") as handle:
        handle.write(spec_text("bad"))
    (daemon.folder / "good.yaml").write_text(spec_text("good"))
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED and job.name == "good"
    time.sleep(3)  # several passes
    ignored = [e for e in daemon.events() if e["event"] == "spec_ignored"]
    assert len(ignored) == 1 and "not valid UTF-8" in ignored[0]["reason"], ignored


def test_a_folder_replaced_by_a_redeploy_leaves_its_waiting_job_waiting(daemon):
    """The waiting job was withdrawn, and then failed: the planning worker's working folder was the deleted one."""
    daemon.start("--max-jobs", "1")
    (daemon.folder / "blocker.yaml").write_text(spec_text("blocker", "# fake-seconds: 6\n"))
    daemon.wait_for(lambda jobs: any(j.state == State.RUNNING for j in jobs), what="the blocker running")
    (daemon.folder / "waiting.yaml").write_text(spec_text("waiting"))
    daemon.wait_for(lambda jobs: any(j.name == "waiting" and j.state == State.QUEUED and j.estimate_bytes
                                     for j in jobs), what="the job waiting")
    old = daemon.folder.with_name("specs.old")
    daemon.folder.rename(old)  # the redeploy: a new folder with the same files takes the old one's place
    shutil.copytree(old, daemon.folder, symlinks=True)
    shutil.rmtree(old)
    jobs = daemon.all_terminal(2, timeout=90)
    assert all(job.state == State.SUCCEEDED for job in jobs), [(j.name, j.state, j.reason) for j in jobs]
    (daemon.folder / "after.yaml").write_text(spec_text("after"))  # the new folder is watched
    started = time.monotonic()
    daemon.all_terminal(3)
    assert time.monotonic() - started < 15


def test_a_job_whose_dependency_failed_says_so_and_runs_once_it_succeeds(daemon):
    daemon.start()
    (daemon.folder / "first.yaml").write_text(spec_text("first", "# fake-run: crash\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.FAILED, what="first failed")
    (daemon.folder / "second.yaml").write_text(spec_text("second").replace("base_model: ./model",
                                                                          "base_model: {job: first}"))
    (second,) = [job for job in daemon.wait_for(
        lambda jobs: any(j.name == "second" and "first failed" in (j.reason or "") for j in jobs),
        what="second saying why it waits") if job.name == "second"]
    assert second.state == State.QUEUED and "runner retry first" in second.reason
    (daemon.folder / "first.yaml").write_text(spec_text("first"))  # fixed
    jobs = daemon.wait_for(lambda jobs: any(j.name == "second" and j.state.terminal for j in jobs), 90, "second")
    assert next(job for job in jobs if job.name == "second").state == State.SUCCEEDED
