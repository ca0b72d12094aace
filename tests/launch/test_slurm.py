"""Slurm: the sbatch script made from a plan, the settings file, and jobs on a real one-node cluster
(the `cluster` fixture of tests/conftest.py)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import RunnerError
from runner.launch import slurm
from runner.manifest import Manifest
from runner.plan.planner import make_plan
from tests.helpers import REPO, TINY_SPEC, assert_imports_none_of

TINY_RUN = "training:\n  max_steps: 2\n  batch_size: 4\n  learning_rate: 1.0e-3\nhardware:\n  device: cpu\n"
LONG_RUN = ("training:\n  max_steps: 100000\n  batch_size: 2\n  learning_rate: 1.0e-4\n"
            "outputs:\n  checkpoint_every: 100000\nhardware:\n  device: cpu\n")


def write_config(folder: Path, text: str) -> Path:
    path = folder / "slurm.yaml"
    path.write_text(text)
    return path


def test_a_plan_on_two_gpu_nodes_becomes_a_readable_sbatch_script(tiny_project, tmp_path):
    config = slurm.load_config(write_config(tmp_path, (
        "partition: gpu\naccount: lab\nmem: 64G\nsbatch: [--qos=high]\npython: /opt/runner/bin/python\n"
        "node: {gpus: 4, gpu_name: H100, gpu_memory_gb: 80, memory_gb: 512}\n")), time="4:00:00")
    spec = tiny_project(TINY_SPEC + "hardware:\n  nodes: 2\n")  # gpus: auto = every GPU of the described node
    plan = make_plan(spec, run_root=tmp_path, machine=config.machine())
    assert (plan.device.type, plan.device.count, plan.device.nodes, plan.device.per_node) == ("cuda", 8, 2, 4)

    submission = slurm.prepare(plan, tmp_path, config)
    script = submission.script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --time=4:00:00", "#SBATCH --signal=TERM@120", "#SBATCH --mem=64G", "#SBATCH --qos=high",
                 f"#SBATCH --output={submission.folder}/slurm-%j.out",
                 'export RUNNER_LAUNCH_ID="slurm-$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}"',
                 'export RUNNER_RENDEZVOUS="$first_host:$((29500 + SLURM_JOB_ID % 20000))"',
                 f"srun --kill-on-bad-exit=0 /opt/runner/bin/python -m runner run --plan {submission.plan} "
                 f"--runs-dir {tmp_path.resolve()} --quiet"):
        assert line in script.splitlines(), line
    assert subprocess.run(["bash", "-n", str(submission.script)]).returncode == 0
    assert submission.folder.parent == tmp_path.resolve() / "runs" / "tiny" / "slurm"
    assert submission.plan.read_text() == plan.model_dump_json(indent=2) + "\n"


def test_one_cpu_node_asks_for_no_gpu_and_no_rendezvous(tiny_project, tmp_path):
    plan = make_plan(tiny_project(TINY_SPEC + TINY_RUN), run_root=tmp_path, machine=slurm.SlurmConfig().machine())
    script = slurm.prepare(plan, tmp_path, slurm.SlurmConfig()).script.read_text()
    assert "#SBATCH --nodes=1" in script and "#SBATCH --cpus-per-task=2" in script
    assert "--gpus-per-node" not in script and "RUNNER_RENDEZVOUS" not in script and "--time" not in script
    assert f"srun --kill-on-bad-exit=0 {sys.executable} -m runner run" in script


def test_a_bad_settings_file_is_named_with_its_line(tmp_path):
    path = write_config(tmp_path, "partition: gpu\npartitoin: cpu\n")
    with pytest.raises(RunnerError, match=r"slurm.yaml:2:1: partitoin: Extra inputs are not permitted"):
        slurm.load_config(path)
    with pytest.raises(RunnerError, match="time limit 'soon' is not minutes"):
        slurm.load_config(tmp_path / "absent.yaml", time="soon")
    with pytest.raises(RunnerError, match="no such Slurm config file"):
        slurm.load_config(tmp_path / "absent.yaml", required=True)
    assert slurm.load_config(tmp_path / "absent.yaml", partition="debug").partition == "debug"


def test_dry_run_writes_the_plan_and_script_and_submits_nothing(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + TINY_RUN)
    assert main(["submit", str(spec), "--runs-dir", str(tmp_path), "--dry-run", "--quiet",
                 "--config", str(write_config(tmp_path, "cpus_per_process: 1\n"))]) == 0
    out = capsys.readouterr().out
    (script,) = (tmp_path / "runs" / "tiny" / "slurm").glob("*/job.sbatch")
    assert "#SBATCH --cpus-per-task=1" in out and f"written, not submitted: {script}" in out
    assert not list((tmp_path / "runs" / "tiny").glob("*/manifest.json"))


def test_launchers_are_torch_free_and_validate_never_loads_slurm():
    assert_imports_none_of(
        "import sys\n"
        "from runner.cli import main\n"
        f"main(['validate', {str(REPO / 'specs')!r}])\n"
        "assert 'runner.launch.slurm' not in sys.modules and 'runner.launch.local' not in sys.modules\n"
        "import runner.commands.submit, runner.launch.local, runner.launch.records, runner.launch.slurm\n"
        "import runner.daemon.slurm_executor")


# --- a real cluster -----------------------------------------------------------------------------

def _manifests(root: Path) -> list[Manifest]:
    return [Manifest.model_validate_json(path.read_text()) for path in (root / "runs" / "tiny").glob("*/manifest.json")]


@pytest.mark.slow
def test_a_submitted_job_succeeds_with_exactly_one_manifest(cluster, tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + TINY_RUN)
    assert main(["submit", str(spec), "--runs-dir", str(tmp_path), "--quiet", "--detach"]) == 0
    out = capsys.readouterr().out
    job_id = out.split("submitted Slurm job ")[1].split(":")[0]
    assert f"follow it: runner submit --attach {job_id}" in out
    assert main(["submit", "--attach", job_id]) == 0
    out = capsys.readouterr().out
    assert f"[slurm] job {job_id}: COMPLETED" in out
    assert out.count("tiny: SUCCEEDED") == 2  # the run's summary in the job's output, and the outcome
    (manifest,) = _manifests(tmp_path)
    assert manifest.state == "succeeded" and manifest.metrics.steps == 2 and len(manifest.attempts) == 1
    (submission,) = (tmp_path / "runs" / "tiny" / "slurm").iterdir()
    assert slurm.run_of(slurm.Submission(submission), job_id).run_dir == str(tmp_path.resolve() / "runs" / "tiny" /
                                                                              manifest.run_id)
    assert slurm.status(job_id).state == "COMPLETED"


@pytest.mark.slow
def test_ctrl_c_while_following_cancels_the_job_and_the_run_checkpoints(cluster, tiny_project, tmp_path):
    # Two processes under torchrun: Slurm signals every process of the job, torchrun passes the signal on
    # as well, and the run must still checkpoint once and end interrupted, not failed.
    spec = tiny_project(TINY_SPEC + LONG_RUN + "  gpus: 2\n")
    config = write_config(tmp_path, "cpus_per_process: 1\n")  # the test cluster's node has 2 CPUs
    # Ctrl-C as a terminal delivers it, whatever this process inherited: a shell's background job (CI started
    # with `&`) ignores SIGINT, and Python keeps an ignored SIGINT ignored.
    follower = subprocess.Popen([sys.executable, "-m", "runner", "submit", str(spec), "--runs-dir", str(tmp_path),
                                 "--quiet", "--config", str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600  # an upper bound: two processes start slowly on a loaded 2-core machine
    while not list((tmp_path / "runs" / "tiny").glob("*/metrics.jsonl")):  # training has begun
        assert time.monotonic() < deadline and follower.poll() is None, follower.communicate()[0]
        time.sleep(0.2)
    follower.send_signal(signal.SIGINT)  # no terminal to ask: Ctrl-C cancels
    out = follower.communicate(timeout=600)[0]
    assert follower.returncode == 130, out
    assert "cancelling (runner writes a checkpoint and stops)" in out and ": CANCELLED" in out
    assert "[runner] tiny: INTERRUPTED" in out and "interrupted: stopped by a signal after writing a checkpoint" in out
    (manifest,) = _manifests(tmp_path)
    assert manifest.state == "interrupted" and manifest.error.kind == "interrupted"
    assert manifest.attempts[-1].state == "interrupted" and manifest.plan.device.count == 2
    run_dir = tmp_path / "runs" / "tiny" / manifest.run_id
    assert list((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def test_a_pending_job_without_a_reason_shows_none_of_slurm_s_none(tmp_path, monkeypatch):
    """scontrol writes Reason=None for a job with nothing to wait for: runner shows no reason, never
    "(None)", in runner submit's lines and in the daemon's status alike."""
    from runner.commands.submit import _describe
    from runner.daemon.slurm_executor import SlurmRun

    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'JobId=7 JobName=runner-x JobState=PENDING Reason=None "
                                       "ExitCode=0:0 NodeList=(null) Command=/x/job.sbatch'\n")
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    job = slurm.status("7")
    assert job.state == "PENDING" and job.reason == ""
    assert _describe(job) == "PENDING"
    assert SlurmRun(1, "7", None, tmp_path / "log", status=job).detail == "queued in Slurm as job 7"
    waiting = slurm.JobStatus("7", "PENDING", "Priority", "0:0", "", None)
    assert _describe(waiting) == "PENDING (Priority)"
    assert SlurmRun(1, "7", None, tmp_path / "log", status=waiting).detail == "queued in Slurm as job 7 (Priority)"


def test_runner_submit_shows_the_job_s_json_events_as_sentences_and_waits_for_whole_lines(tmp_path, capsys):
    from runner.commands.submit import _print_new

    output = tmp_path / "slurm-7.out"
    output.write_text('{"event": "progress", "step": 1, "total_steps": 2, "loss": 0.8192039728164673}\n'
                      'Plan for tiny: sft\n{"event": "run_fin')
    offset = _print_new(output, 0)
    assert capsys.readouterr().out == "step 1/2  loss 0.8192\nPlan for tiny: sft\n"
    with open(output, "a") as handle:
        handle.write('ished", "state": "succeeded", "run_dir": "/r"}\ntiny: SUCCEEDED')
    offset = _print_new(output, offset)
    assert capsys.readouterr().out == "run finished: succeeded\n"
    assert _print_new(output, offset, everything=True) == output.stat().st_size
    assert capsys.readouterr().out == "tiny: SUCCEEDED\n"
