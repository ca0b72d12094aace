"""The planning worker, driven as the daemon drives it (the real protocol and limits; the fake runner's
planner copies a template plan)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runner.daemon.worker import Reply, Worker
from tests.conftest import REPO
from tests.daemon.harness import FAKE, spec_text


@pytest.fixture
def worker(tmp_path, plan_template, monkeypatch):
    monkeypatch.setenv("FAKE_PLAN_TEMPLATE", str(plan_template))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    made = Worker(FAKE, "plan", tmp_path / "worker.log", [])
    yield made
    made.stop()


def plan(worker: Worker, tmp_path, name: str, extra: str = "", timeout: float = 60) -> Reply:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(spec_text(name, extra))
    worker.send("plan", name, timeout, snapshot=spec, source=spec, out=tmp_path / f"{name}.plan.json",
                runs_dir=tmp_path, log=tmp_path / f"{name}.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reply = worker.poll()
        if reply is not None:
            return reply
        time.sleep(0.02)
    raise AssertionError("no reply")


def test_it_plans_one_job_after_another_in_one_process(worker, tmp_path):
    worker.start()
    first = worker.process.pid
    assert plan(worker, tmp_path, "one").ok and (tmp_path / "one.plan.json").is_file()
    assert plan(worker, tmp_path, "two").ok and worker.process.pid == first


def test_a_killed_worker_fails_its_request_and_is_started_again(worker, tmp_path):
    worker.start()
    killed = worker.process.pid
    worker.send("plan", "slow", 60, snapshot=tmp_path / "x", source=tmp_path / "x", out=tmp_path / "x.json",
                runs_dir=tmp_path)
    os.killpg(killed, signal.SIGKILL)
    reply = None
    while reply is None:
        reply = worker.poll()
        time.sleep(0.02)
    assert not reply.ok and "killed by SIGKILL" in reply.reason
    assert plan(worker, tmp_path, "after").ok and worker.process.pid != killed


def test_a_request_past_its_deadline_ends_the_worker_and_the_next_one_gets_a_fresh_one(worker, tmp_path):
    worker.start()
    stuck = worker.process.pid
    started = time.monotonic()
    reply = plan(worker, tmp_path, "stuck", "# fake-plan-seconds: 60\n", timeout=1.5)
    assert reply.timed_out and not reply.ok and time.monotonic() - started < 30
    assert worker.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)
    assert plan(worker, tmp_path, "next").ok and worker.process.pid != stuck


def test_a_spec_that_makes_it_allocate_fails_with_a_reason_and_a_fresh_worker(worker, tmp_path):
    worker.start()
    first = worker.process.pid
    reply = plan(worker, tmp_path, "hog", "# fake-plan: hog\n")
    assert not reply.ok and "memory" in reply.reason
    assert plan(worker, tmp_path, "after").ok and worker.process.pid != first
