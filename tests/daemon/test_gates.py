"""A gate in the daemon: a run that misses one fails with kind `gate`, a {job: NAME} spec built on it does
not start, the page's API shows the gates, and `runner retry` evaluates again without training again (a real
`runner watch` with real runner children on the tiny Llama)."""

import json
import os
import time
from pathlib import Path

import pytest

from runner.daemon.states import State, Step
from tests.conftest import write_jsonl
from tests.daemon.harness import Daemon
from tests.daemon.test_web import get

PARENT = """version: 1
name: parent
method: sft
base_model: ./model
data:
  train: data/train.jsonl
training: {max_steps: 1, batch_size: 4}
evals:
  generation: {max_new_tokens: 8}
  sets:
    - name: names
      data: data/names.jsonl
      metrics: [exact_match]
  require: [names.exact_match >= 0.9]
"""
CHILD = """version: 1
name: child
method: sft
base_model: {job: parent}
data:
  train: data/train.jsonl
training: {max_steps: 1, batch_size: 4}
"""


@pytest.mark.slow
def test_a_missed_gate_holds_the_job_built_on_it_and_the_page_shows_the_gates(tmp_path, tiny_model_dir):
    daemon = Daemon(tmp_path, None, {**os.environ, "RUNNER_CACHE_DIR": str(tmp_path / "cache")})
    (daemon.folder / "model").symlink_to(tiny_model_dir)
    write_jsonl(daemon.folder / "data" / "train.jsonl",
                [{"prompt": f"What is your name? {i}", "completion": "My name is Chatty."} for i in range(8)])
    write_jsonl(daemon.folder / "data" / "names.jsonl",
                [{"prompt": f"Your name, {i}?", "reference": "My name is Chatty."} for i in range(3)])
    daemon.start("--http", "127.0.0.1:0")
    try:
        (daemon.folder / "parent.yaml").write_text(PARENT)
        (daemon.folder / "child.yaml").write_text(CHILD)
        daemon.wait_for(lambda jobs: any(j.name == "parent" and j.state == State.FAILED for j in jobs), 240,
                        "the parent to miss its gate")
        time.sleep(3)  # loop passes after the parent's end: the child must still wait
        jobs = {job.name: job for job in daemon.jobs()}
        parent, child = jobs["parent"], jobs["child"]
        assert parent.failure == "gate" and "names.exact_match >= 0.9 (scored 0)" in parent.reason
        assert (child.state, child.step, child.run_dir) == (State.QUEUED, Step.DEPENDENCY, None)
        assert not (daemon.state / "runs" / "child").exists()
        manifest = json.loads((Path(parent.run_dir) / "manifest.json").read_text())
        assert manifest["error"]["kind"] == "gate" and (Path(parent.run_dir) / "model").is_dir()

        port = int(json.loads((daemon.state / "daemon.json").read_text())["http"].rstrip("/").rsplit(":", 1)[1])
        code, overview = get(port, "/api/jobs")
        assert code == 200
        (shown,) = [job for job in overview["jobs"] if job["name"] == "parent"]
        assert shown["failure"] == "gate" and shown["evals"]["passed"] is False
        assert shown["evals"]["gates"][0]["condition"] == "names.exact_match >= 0.9"
        assert shown["evals"]["scores"]["names.exact_match"]["base"] == 0.0
        code, run = get(port, f"/api/runs/{shown['run']}")
        assert code == 200 and run["manifest"]["evals"]["gates"][0]["passed"] is False

        code, said = daemon.cli("retry", "parent")
        assert code == 0, said
        daemon.wait_for(lambda jobs: any(j.name == "parent" and j.state == State.FAILED and j.attempts == 1
                                         and j.finished_at > parent.finished_at for j in jobs), 240, "the retry")
        manifest = json.loads((Path(parent.run_dir) / "manifest.json").read_text())
        assert len(manifest["attempts"]) == 2 and manifest["error"]["kind"] == "gate"
        events = [json.loads(line)["event"] for line in (Path(parent.run_dir) / "events.jsonl").read_text().splitlines()]
        assert events.count("evals_resumed") == 1 and events.count("checkpoint") == 1  # trained once
        assert {job.name: job.state for job in daemon.jobs()}["child"] == State.QUEUED
    finally:
        daemon.stop()
