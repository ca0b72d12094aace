"""The daemon with real processes: a `runner watch` subprocess on a temporary folder.

Most tests use tests/daemon/fake_runner.py as the runner children (fast and steerable);
one runs a real tiny training job end to end.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.daemon.states import State
from tests.conftest import REPO
from tests.daemon.harness import Daemon, ledger, spec_text

def test_valid_invalid_half_written_and_duplicate_specs(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "valid.yaml").write_text(spec_text("valid"))
    (daemon.folder / "invalid.yaml").write_text(spec_text("invalid").replace("method: sft", "method: sfft"))
    half = daemon.folder / "half.yaml"
    text = spec_text("half")
    half.write_text(text[: len(text) // 2])
    time.sleep(1.0)
    half.write_text(text)
    (daemon.folder / ".valid.yaml.swp").write_text("editor junk")
    (daemon.folder / "notes.yaml").write_text("just: configuration\n")
    jobs = daemon.all_terminal(3)
    by_name = {job.name or Path(job.path).name: job for job in jobs}
    assert set(by_name) == {"valid", "half", "invalid.yaml"}, [(j.path, j.state, j.reason) for j in jobs]
    assert by_name["valid"].state == State.SUCCEEDED and by_name["half"].state == State.SUCCEEDED
    assert by_name["invalid.yaml"].state == State.INVALID
    assert any("'sfft' is not one of" in d["summary"] for d in by_name["invalid.yaml"].diagnostics)

    (daemon.folder / "valid.yaml").write_text(spec_text("valid"))  # the same content again: no new run
    (daemon.folder / "copy.yaml").write_text(spec_text("valid-copy"))
    jobs = daemon.all_terminal(4)
    assert sorted(entry["spec"].rsplit("/", 1)[1] for entry in ledger(tmp_path)) == [
        "copy.yaml", "half.yaml", "valid.yaml"]


def test_changed_spec_runs_again_and_deleted_queued_spec_is_cancelled(daemon, tmp_path):
    daemon.start()
    path = daemon.folder / "job.yaml"
    path.write_text(spec_text("job"))
    daemon.all_terminal(1)
    path.write_text(spec_text("job", "# fake-seconds: 0.1\n"))
    jobs = daemon.all_terminal(2)
    assert [job.state for job in jobs] == [State.SUCCEEDED, State.SUCCEEDED]
    (daemon.folder / "long.yaml").write_text(spec_text("long", "# fake-seconds: 30\n"))
    daemon.wait_for(lambda jobs: any(j.name == "long" and j.state == State.RUNNING for j in jobs), what="long runs")
    (daemon.folder / "later.yaml").write_text(spec_text("later"))
    daemon.wait_for(lambda jobs: any(j.name == "later" and j.estimate_bytes for j in jobs), what="later planned")
    (daemon.folder / "later.yaml").unlink()
    jobs = daemon.wait_for(lambda jobs: any(j.name == "later" and j.state == State.CANCELLED for j in jobs),
                           what="later cancelled")
    assert next(j for j in jobs if j.name == "later").reason == "the spec file was deleted"


def test_failures_are_classified(daemon):
    daemon.start()
    (daemon.folder / "plan.yaml").write_text(spec_text("no-plan", "# fake-plan: fail\n"))
    (daemon.folder / "crash.yaml").write_text(spec_text("crash", "# fake-run: crash\n"))
    (daemon.folder / "oom.yaml").write_text(spec_text("oom", "# fake-run: oom\n"))
    jobs = {job.name: job for job in daemon.all_terminal(3)}
    assert (jobs["no-plan"].state, jobs["no-plan"].failure) == (State.FAILED, "plan")
    assert "does not fit" in jobs["no-plan"].reason
    assert (jobs["crash"].failure, jobs["crash"].reason) == ("runtime", "crashed with SIGSEGV")
    assert (jobs["oom"].failure, jobs["oom"].reason) == ("oom", "out of memory: CUDA out of memory")


def test_cancel_retry_status_and_logs(daemon, capsys):
    from runner.cli import main

    daemon.start()
    (daemon.folder / "long.yaml").write_text(spec_text("long", "# fake-seconds: 60\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="running")
    assert main(["status", "--state-dir", str(daemon.state)]) == 0
    assert "long" in capsys.readouterr().out
    assert main(["cancel", "long", "--state-dir", str(daemon.state)]) == 0
    jobs = daemon.all_terminal(1)
    assert jobs[0].state == State.CANCELLED
    assert main(["retry", "long", "--state-dir", str(daemon.state)]) == 0
    daemon.wait_for(lambda jobs: jobs[0].state == State.RUNNING, what="running again")
    capsys.readouterr()
    assert main(["status", "--state-dir", str(daemon.state), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)["jobs"][0]
    assert record["state"] == "running" and record["attempts"] == 1
    assert main(["logs", "long", "--state-dir", str(daemon.state)]) == 0


def test_killed_daemon_adopts_or_resumes_and_nothing_runs_twice(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "adopted.yaml").write_text(spec_text("adopted", "# fake-seconds: 4\n"))
    jobs = daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="running")
    daemon.stop(signal.SIGKILL)  # the child lives on in its own process group
    daemon.start()
    jobs = daemon.all_terminal(1)
    assert jobs[0].state == State.SUCCEEDED and jobs[0].attempts == 1
    assert len(ledger(tmp_path)) == 1

    (daemon.folder / "resumed.yaml").write_text(spec_text("resumed", "# fake-seconds: 4\n"))
    jobs = daemon.wait_for(lambda jobs: any(j.name == "resumed" and j.state == State.RUNNING and j.run_dir
                                            for j in jobs), what="running with a run directory")
    child = next(j for j in jobs if j.name == "resumed").pid
    daemon.stop(signal.SIGKILL)
    os.killpg(child, signal.SIGKILL)  # the machine lost both
    daemon.start()
    jobs = daemon.all_terminal(2)
    resumed = next(j for j in jobs if j.name == "resumed")
    assert resumed.state == State.SUCCEEDED and resumed.attempts == 2
    manifest = json.loads((Path(resumed.run_dir) / "manifest.json").read_text())
    assert [a["state"] for a in manifest["attempts"]] == ["killed", "succeeded"]
    assert [entry["attempt"] for entry in ledger(tmp_path) if entry["spec"].endswith("resumed.yaml")] == [1, 2]


def test_warm_stop_checkpoints_and_the_next_start_resumes(daemon, tmp_path):
    daemon.start()
    (daemon.folder / "long.yaml").write_text(spec_text("long", "# fake-seconds: 3\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING and jobs[0].run_dir, what="running")
    assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.jobs()[0].state == State.RECOVERING
    daemon.start()
    jobs = daemon.all_terminal(1)
    assert jobs[0].state == State.SUCCEEDED
    manifest = json.loads((Path(jobs[0].run_dir) / "manifest.json").read_text())
    assert [a["state"] for a in manifest["attempts"]] == ["interrupted", "succeeded"]


def test_fifty_specs_at_once_are_each_handled_once(daemon, tmp_path):
    daemon.start()
    for index in range(50):
        (daemon.folder / f"job-{index:02d}.yaml").write_text(spec_text(f"job-{index:02d}", "# fake-seconds: 0\n"))
    jobs = daemon.all_terminal(50, timeout=240)
    assert all(job.state == State.SUCCEEDED for job in jobs)
    runs = ledger(tmp_path)
    assert len(runs) == 50 and len({entry["spec"] for entry in runs}) == 50


def test_a_real_training_job_end_to_end(tmp_path, tiny_model_dir, plan_template):
    created = Daemon(tmp_path, None, {**os.environ})
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
    created.start()
    try:
        (created.folder / "real.yaml").write_text(spec_text("real", "training: {max_steps: 2, batch_size: 4}\n"))
        (job,) = created.all_terminal(1, timeout=120)
        assert job.state == State.SUCCEEDED, job.reason
        manifest = json.loads((Path(job.run_dir) / "manifest.json").read_text())
        assert manifest["state"] == "succeeded" and manifest["metrics"]["steps"] == 2
        assert Path(job.run_dir).is_relative_to(created.state)
    finally:
        created.stop()


@pytest.mark.slow
def test_declared_rewards_run_without_the_allow_option_and_reward_code_does_not(tmp_path, tiny_model_dir):
    """A declared reward is data: the daemon trains with it as it is. A Python function is code from whoever
    dropped the file: refused unless the daemon was started with --allow-reward-functions."""
    created = Daemon(tmp_path, None, {**os.environ})
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(8)))
    (created.folder / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    grpo = ("training: {max_steps: 1, batch_size: 4}\ntrainable: {mode: lora}\n"
            "grpo:\n  num_generations: 2\n  max_completion_length: 4\n  reward:\n")
    created.start()
    try:
        (created.folder / "checks.yaml").write_text(spec_text("checks", grpo + "    - numeric: {column: answer}\n"
                                                                            "    - contains: {text: a}\n")
                                                    .replace("method: sft", "method: grpo"))
        (created.folder / "code.yaml").write_text(spec_text("code", grpo + "    - function: 'scoring:score'\n")
                                                  .replace("method: sft", "method: grpo"))
        jobs = {Path(job.path).stem: job for job in created.all_terminal(2, timeout=180)}
        assert jobs["checks"].state == State.SUCCEEDED, jobs["checks"].reason
        manifest = json.loads((Path(jobs["checks"].run_dir) / "manifest.json").read_text())
        assert "rewards/numeric/mean" in manifest["metrics"]["method"]
        assert jobs["code"].state == State.INVALID and "--allow-reward-functions" in jobs["code"].reason
        assert jobs["code"].reason.startswith("grpo.reward[0].function: 'scoring:score' runs Python code")
    finally:
        created.stop()


def test_the_daemon_modules_stay_torch_free():
    code = ("import sys\nimport runner.daemon.supervisor, runner.commands.watch, runner.commands.status\n"
            "import runner.daemon.web, runner.daemon.report, runner.commands.serve\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == 0, completed.stderr
