"""Slurm as the cluster's scheduler: a plan becomes an sbatch script, and sbatch, scontrol and scancel
submit, watch and cancel it.

runner calls these three commands itself rather than using submitit: submitit runs pickled Python functions
(runner runs one command line, `runner run --plan`, and the script should be readable), and it reads job
states from sacct, which needs Slurm's accounting storage that many clusters, and every minimal one, lack.
scontrol knows a job while it runs and for MinJobAge seconds (300 by default) after it ends; after that the
run's manifest is the record, found through the launch record the job's node 0 wrote
(runner.launch.records).

What a scheduler-facing caller (`runner submit`, a daemon executor) needs:
    prepare(plan, run_root, config) -> Submission    the plan and sbatch script, written under the run root
    submit(script) -> job id                          sbatch
    status(job id) -> JobStatus | None                scontrol (None: Slurm no longer knows the job)
    queued_under(folder, plan) -> {job id: script}     squeue: the plan's jobs with scripts under a folder
    cancel(job id[, signal])                          scancel: SIGTERM to every process, a checkpoint, then stop
    run_of(submission, job id)                        the run the job trains, once its node 0 started it
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.errors import RunnerError
from runner.fsutil import write_atomically
from runner.launch.local import LAUNCH_ID_ENV, RENDEZVOUS_ENV
from runner.launch.records import LaunchRecord, read_launch
from runner.plan.machine import Machine
from runner.plan.models import Plan
from runner.rundir import new_folder, plan_sha256, runs_folder

CONFIG_ENV = "RUNNER_SLURM_CONFIG"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
"""Job states after which nothing more runs (a requeued job goes back to PENDING instead)."""
GIB = 1024 ** 3
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class NodeFacts(BaseModel):
    """One compute node, for planning on a machine (a login node) that does not have its GPUs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    gpus: int = Field(0, ge=0)
    """GPUs on one node; `hardware.gpus: auto` uses them all."""
    gpu_name: str = "GPU"
    gpu_memory_gb: float = Field(0, ge=0)
    """Memory of one GPU; the plan's memory verdict is made against it."""
    bf16: bool = True
    """Whether the GPUs support bf16 (Ampere and later do)."""
    memory_gb: float = Field(gt=0)
    """The node's memory (RAM) available to a job."""


class SlurmConfig(BaseModel):
    """How jobs go to this cluster: ~/.config/runner/slurm.yaml, $RUNNER_SLURM_CONFIG or --config.

    Site and account facts, kept out of the job spec so that one spec runs anywhere."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    partition: str | None = None
    """sbatch --partition; the cluster's default partition when absent."""
    account: str | None = None
    """sbatch --account."""
    time: str | None = None
    """sbatch --time, the job's time limit: minutes, HH:MM:SS or D-HH:MM:SS."""
    stop_before_limit_s: int = Field(120, ge=0)
    """With a time limit, runner is sent SIGTERM this many seconds before it, to write a checkpoint; running the
    same plan again resumes from it."""
    cpus_per_process: int = Field(2, ge=1)
    """CPUs for each training process (one per GPU); the job asks for this many per process on each node."""
    mem: str | None = None
    """sbatch --mem, memory per node (like 64G); the cluster's default when absent."""
    port: int | None = Field(None, gt=0, lt=65536)
    """The rendezvous port on the first node, for plans on several nodes; default 29500 + job id % 20000."""
    python: str | None = None
    """The interpreter with runner installed, as the compute nodes see it; default: the one that submits."""
    sbatch: list[str] = []
    """More sbatch options, each one `#SBATCH` line: ["--qos=high", "--constraint=h100"]."""
    node: NodeFacts | None = None
    """What one compute node has; plans are made against it instead of the machine that submits."""

    def machine(self) -> Machine | None:
        if self.node is None:
            return None
        facts = self.node
        return Machine(cuda_devices=facts.gpus, cuda_names=(facts.gpu_name,) * facts.gpus,
                       cuda_memory_bytes=int(facts.gpu_memory_gb * GIB), cuda_bf16=facts.bf16 and facts.gpus > 0,
                       ram_available_bytes=int(facts.memory_gb * GIB))


def config_path(given: str | None) -> Path:
    if given:
        return Path(given)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "runner" / "slurm.yaml"


def load_config(path: Path, *, required: bool = False, **overrides: str | None) -> SlurmConfig:
    """The config file (when there is one) with the flags given on the command line on top."""
    data = {}
    if path.is_file():
        from runner.spec.yamlpos import format_path, load_yaml

        document, diagnostics = load_yaml(path)
        errors = [d for d in diagnostics if d.is_error]
        if errors:
            raise RunnerError(errors[0].format_text())
        data = document.data
        try:
            SlurmConfig.model_validate(data)
        except ValidationError as error:
            problem = error.errors()[0]
            span = document.locate(tuple(problem["loc"]), key=problem["type"] == "extra_forbidden")
            where = f"{path}:{span.line}:{span.column}" if span else str(path)
            raise RunnerError(f"{where}: {format_path(tuple(problem['loc']))}: {problem['msg']}",
                              "the keys are described in schemas/slurm.schema.json") from None
    elif required:
        raise RunnerError(f"{path}: no such Slurm config file")
    config = SlurmConfig.model_validate({**data, **{key: value for key, value in overrides.items() if value}})
    if config.time is not None and not _TIME.match(config.time):
        raise RunnerError(f"time limit {config.time!r} is not minutes, HH:MM:SS or D-HH:MM:SS",
                          "for example --time 4:00:00")
    return config


# --- the script ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Submission:
    folder: Path
    """<runs folder>/slurm/<stamp>-<plan hash>: the plan, the script, Slurm's output, the job id."""

    plan = property(lambda self: self.folder / "plan.json")
    script = property(lambda self: self.folder / "job.sbatch")
    runs_folder = property(lambda self: self.folder.parent.parent)

    def output(self, job_id: str) -> Path:
        return self.folder / f"slurm-{job_id}.out"


def prepare(plan: Plan, run_root: Path, config: SlurmConfig) -> Submission:
    """Write the plan and its sbatch script under the run root, which the compute nodes must see too."""
    root = run_root.resolve()
    submission = Submission(new_folder(runs_folder(root, plan) / "slurm", plan_sha256(plan)))
    write_atomically(submission.plan, plan.model_dump_json(indent=2) + "\n")
    write_atomically(submission.script, sbatch_script(plan, submission, root, config))
    return submission


def sbatch_script(plan: Plan, submission: Submission, run_root: Path, config: SlurmConfig) -> str:
    device = plan.device
    options = [f"--job-name={job_name(plan)}", f"--nodes={device.nodes}", "--ntasks-per-node=1",
               f"--cpus-per-task={device.per_node * config.cpus_per_process}",
               f"--output={submission.folder / 'slurm-%j.out'}", "--open-mode=append"]
    if device.type == "cuda":
        options.append(f"--gpus-per-node={device.per_node}")
    for name in ("partition", "account", "time", "mem"):
        if getattr(config, name):
            options.append(f"--{name}={getattr(config, name)}")
    if config.time:
        options.append(f"--signal=TERM@{config.stop_before_limit_s}")
    options += config.sbatch
    python = config.python or sys.executable
    command = [python, "-m", "runner", "run", "--plan", str(submission.plan), "--runs-dir", str(run_root), "--quiet"]
    lines = ["#!/bin/bash", f"# runner {plan.name} ({plan.method}): {device.nodes} node(s) x {device.per_node} "
             f"{device.type} process(es). Written by runner submit; sbatch it again to run the same plan.",
             *(f"#SBATCH {option}" for option in options), "", "set -euo pipefail",
             "# Node 0 records the run directory under this id; a requeued job (new restart count) resumes it.",
             f'export {LAUNCH_ID_ENV}="slurm-$SLURM_JOB_ID-${{SLURM_RESTART_COUNT:-0}}"']
    if device.nodes > 1:
        port = str(config.port) if config.port else "$((29500 + SLURM_JOB_ID % 20000))"
        lines += ["# Every node meets node 0 (the first host of the allocation); each reads its rank from "
                  "SLURM_NODEID.",
                  'first_host="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"',
                  f'export {RENDEZVOUS_ENV}="$first_host:{port}"']
    lines += ["# runner itself tells every node of a failure elsewhere; srun must not kill node 0 before it has",
              "# recorded the outcome in the manifest.",
              "srun --kill-on-bad-exit=0 " + shlex.join(command), ""]
    return "\n".join(lines)


def job_name(plan: Plan) -> str:
    return f"runner-{plan.name}"


# --- the cluster's commands ---------------------------------------------------------------------

@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str
    """Slurm's job state: PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ..."""
    reason: str
    """Why a pending job waits (Priority, Resources, ...); empty when Slurm gives none (it writes "None")."""
    exit_code: str
    """The batch script's exit code and the signal that ended it, as `code:signal`."""
    nodes: str
    script: str | None
    """The batch script's path (its folder is the submission's)."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def submit(script: Path) -> str:
    """sbatch the script; return the job id."""
    completed = _slurm("sbatch", "--parsable", str(script))
    if completed.returncode != 0:
        raise RunnerError(f"sbatch refused the job: {completed.stderr.strip() or completed.stdout.strip()}",
                          "check the partition, account and limits (runner submit --partition/--account/--time, or "
                          "the Slurm config file); the script is " + str(script))
    return completed.stdout.strip().split(";")[0]


def status(job_id: str) -> JobStatus | None:
    """The job's state from scontrol; None once Slurm has forgotten it (MinJobAge after its end)."""
    completed = _slurm("scontrol", "show", "job", "--oneliner", job_id)
    if completed.returncode != 0:
        if "invalid job id" in completed.stderr.lower():
            return None
        raise RunnerError(f"scontrol show job {job_id} failed: {completed.stderr.strip()}")
    fields = dict(re.findall(r"(\w+)=(\S*)", completed.stdout))
    return JobStatus(job_id=job_id, state=fields.get("JobState", "UNKNOWN"), reason=_reason(fields.get("Reason", "")),
                     exit_code=fields.get("ExitCode", ""), nodes=fields.get("NodeList", ""),
                     script=fields.get("Command") or None)


def _reason(text: str) -> str:
    return "" if text == "None" else text


def cancel(job_id: str, signal: str | None = None) -> None:
    """scancel: every process of the job gets SIGTERM (runner checkpoints and stops), SIGKILL after KillWait.
    With a signal: only that signal, to the processes of the job's steps; the job is not cancelled and ends
    when they do (a pending job has none: scancel refuses). Cancelling a job that has ended does nothing."""
    completed = _slurm("scancel", *([f"--signal={signal}"] if signal else []), job_id)
    if completed.returncode != 0:
        raise RunnerError(f"scancel {job_id} failed: {completed.stderr.strip()}")


def queued_under(folder: Path, plan: Plan) -> dict[str, Path]:
    """This user's jobs of this plan's name that Slurm has queued or running, whose batch script lies under
    `folder`: job id -> script."""
    completed = _slurm("squeue", "--noheader", "--me", f"--name={job_name(plan)}", "--format=%i %o")
    if completed.returncode != 0:
        raise RunnerError(f"squeue failed: {completed.stderr.strip()}")
    found = {}
    for line in completed.stdout.splitlines():
        job_id, _, script = line.strip().partition(" ")
        if script and Path(script).is_relative_to(folder):
            found[job_id] = Path(script)
    return found


def run_of(submission: Submission, job_id: str) -> LaunchRecord | None:
    """The run this job trains (or trained), once its node 0 started it; after a requeue, the latest start.
    Found through the launch record (RUNNER_LAUNCH_ID is slurm-<job id>-<restart count>), so it works after
    Slurm has forgotten the job."""
    starts = {int(path.stem.rsplit("-", 1)[1]): path.stem
              for path in (submission.runs_folder / "launches").glob(f"slurm-{job_id}-*.json")
              if path.stem.rsplit("-", 1)[1].isdigit()}
    return read_launch(submission.runs_folder, starts[max(starts)]) if starts else None


def submission_of(job: JobStatus) -> Submission | None:
    """The submission folder of a job runner submitted (its batch script lies in it)."""
    if job.script is None or Path(job.script).name != "job.sbatch":
        return None
    return Submission(Path(job.script).parent)


def _slurm(*command: str) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        raise RunnerError(f"{command[0]} not found: Slurm's client commands are not installed here",
                          "submit from a machine of the cluster (a login node), or install slurm-client")
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise RunnerError(f"{command[0]} did not answer within 60 s", "is slurmctld reachable?") from None
