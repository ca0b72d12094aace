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
from tests.helpers import REPO, assert_imports_none_of
from tests.daemon.harness import Daemon, handle, ledger, spec_text, wait_until

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


def test_a_failure_kind_a_run_records_is_the_job_s_in_status_and_the_api(daemon):
    """One vocabulary (runner.failures), no mapping: `data`, `integrity`, `killed`, `stale` and `gate` were all
    reported as `runtime` (or `plan`) before."""
    kinds = ("data", "integrity", "killed", "stale", "gate")
    daemon.start()
    for kind in kinds:
        (daemon.folder / f"{kind}.yaml").write_text(spec_text(f"fails-{kind}", f"# fake-run: failed-{kind}\n"))
    jobs = {job.name: job for job in daemon.all_terminal(len(kinds))}
    assert {name: (job.state, job.failure) for name, job in jobs.items()} == {
        f"fails-{kind}": (State.FAILED, kind) for kind in kinds}
    code, shown = daemon.cli("status")
    assert code == 0 and all(f"failed ({kind})" in shown for kind in kinds), shown
    code, text = daemon.cli("status", "--format", "json")
    assert sorted(record["failure"] for record in json.loads(text)["jobs"]) == sorted(kinds)


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


def test_retry_acts_at_once_and_status_shows_the_run_s_new_attempt(daemon):
    daemon.start("--rescan", "60")  # an idle daemon would find the retried job a minute later
    (daemon.folder / "long.yaml").write_text(spec_text("long", "# fake-seconds: 60\n# fake-metrics: 600\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING and jobs[0].run_dir, what="running")
    assert daemon.cli("cancel", "long")[0] == 0
    (job,) = daemon.all_terminal(1)
    assert job.state == State.CANCELLED
    time.sleep(1)  # the daemon is idle now, asleep until its rescan

    code, said = daemon.cli("retry", "long")
    asked = time.monotonic()
    assert code == 0 and said.strip() == f"#{job.id} long: queued again", said
    daemon.wait_for(lambda jobs: jobs[0].state == State.RUNNING, timeout=15, what="running again at once")
    manifest = Path(job.run_dir) / "manifest.json"
    wait_until(lambda: len(json.loads(manifest.read_text())["attempts"]) == 2, 15, "the second attempt")
    assert time.monotonic() - asked < 15
    code, shown = daemon.cli("status")
    line = next(line for line in shown.splitlines() if " long " in line)
    assert "attempt 2" in line and "running " in line and "running running" not in line, shown
    daemon.cli("cancel", "long")


def test_logs_follow_shows_a_running_job_s_steps_as_they_come_and_ends_with_it(daemon):
    daemon.start()
    (daemon.folder / "steps.yaml").write_text(spec_text("steps", "# fake-seconds: 4\n# fake-metrics: 8\n"))
    daemon.wait_for(lambda jobs: jobs and jobs[0].state == State.RUNNING, what="running")
    follower = subprocess.Popen([sys.executable, "-m", "runner", "logs", "steps", "-f", "--state-dir",
                                 str(daemon.state)], stdout=subprocess.PIPE, text=True, env=daemon.env, cwd=REPO)
    try:
        seen = []
        while not any(line.startswith("step ") for line in seen):
            seen.append(follower.stdout.readline())
            assert seen[-1], seen  # the follower must not end before a step is shown
        assert daemon.jobs()[0].state == State.RUNNING  # shown while the job runs, not after
        rest, _ = follower.communicate(timeout=60)  # and it ends when the job does
    finally:
        follower.kill()
    shown = "".join(seen) + rest
    assert follower.returncode == 0
    assert "step 1/8  loss 2.3077  1,234 tok/s  ETA 0:01" in shown and "step 8/8" in shown, shown
    assert '"event"' not in shown and "fake run of steps" in shown
    raw = daemon.cli("logs", "steps", "--format", "json")[1]
    assert '{"event": "progress", "step": 8, "total_steps": 8' in raw


def test_the_daemon_s_terminal_reads_as_sentences_and_its_log_file_keeps_json(daemon):
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(daemon.command_line(), stdout=follower, stderr=follower, env=daemon.env, cwd=REPO)
    os.close(follower)
    try:
        (daemon.folder / "job.yaml").write_text(spec_text("job"))
        wait_until(lambda: any(e["event"] == "job_finished" for e in daemon.events()), 60, "the job's end")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    shown = screen.decode()
    assert f"daemon started: watching {daemon.folder.resolve()}" in shown and "job: succeeded" in shown, shown
    assert '"event"' not in shown
    assert daemon.events()[0]["event"] == "daemon_started"  # daemon.jsonl: JSON lines, as before


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
    child = handle(next(j for j in jobs if j.name == "resumed"), "pid")
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


def test_a_real_training_job_end_to_end_found_from_anywhere_through_the_box_s_config(tmp_path, tiny_model_dir):
    """One config file says where the box keeps its state and runs: the daemon writes there, and a colleague
    in any folder finds the jobs and the runs with plain `runner status`, `runs`, `logs` and `sample`."""
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    config.write_text("state_dir: ../state\nruns_dir: /" + str(tmp_path / "shared" / "runs").lstrip("/") + "\n")
    env = {key: value for key, value in os.environ.items() if key not in ("RUNNER_RUNS_DIR", "RUNNER_STATE_DIR")}
    env["RUNNER_CONFIG"] = str(config)
    created = Daemon(tmp_path, None, env)
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
    created.start(state_flag=False)
    try:
        (created.folder / "real.yaml").write_text(spec_text("real", "training: {max_steps: 2, batch_size: 4}\n"
                                                                    "samples: [q]\n"))
        (job,) = created.all_terminal(1, timeout=120)
        assert job.state == State.SUCCEEDED, job.reason
        manifest = json.loads((Path(job.run_dir) / "manifest.json").read_text())
        assert manifest["state"] == "succeeded" and manifest["metrics"]["steps"] == 2
        assert Path(job.run_dir).is_relative_to(tmp_path / "shared" / "runs" / "runs" / "real")
    finally:
        created.stop()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def colleague(*arguments: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "runner", *arguments], capture_output=True, text=True,
                                   env=env, cwd=elsewhere, timeout=300)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed.stdout

    assert "real" in colleague("status") and job.run_dir in colleague("status")
    listed = colleague("runs")
    assert listed.splitlines()[1].startswith("real ") and "succeeded" in listed
    logged = colleague("logs", "real")  # the real child's output: its steps, rendered
    assert "step 2/2  loss " in logged and "run finished: succeeded" in logged and '"event"' not in logged
    assert colleague("sample", "real", "q").strip()



@pytest.mark.slow
def test_a_real_job_whose_log_cannot_be_written_runs_on(tmp_path, tiny_model_dir):
    """Issue 20: a job's log is under the daemon's state dir; when that disk was full, the first event line
    the job printed raised ENOSPC and the job died, its manifest left `running`. /dev/full is that log."""
    created = Daemon(tmp_path, None, {**os.environ})
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
    (created.state / "logs").mkdir(parents=True)
    (created.state / "logs" / "1.log").symlink_to("/dev/full")  # the log of the first job
    created.start()
    try:
        (created.folder / "full.yaml").write_text(spec_text("full", "training: {max_steps: 2, batch_size: 4}\n"))
        (job,) = created.all_terminal(1, timeout=180)
        assert job.id == 1 and job.state == State.SUCCEEDED, job.reason
        run = Path(job.run_dir)
        assert json.loads((run / "manifest.json").read_text())["state"] == "succeeded"
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        assert "stdout" in {event["stream"] for event in events if event["event"] == "console_lost"}
        assert events[-1]["event"] == "run_finished"
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
    assert_imports_none_of("import runner.daemon.supervisor, runner.commands.watch, runner.commands.status\n"
                           "import runner.daemon.web, runner.daemon.report, runner.commands.serve")
