"""`runner submit SPEC`: plan here, train on a Slurm cluster, follow the job to its end.

The plan is made and shown here (against the compute node described in the Slurm config, when there is
one), then written with its sbatch script under the run root, which the compute nodes must see; the job
runs `srun runner run --plan` on every node. Following prints Slurm's state changes and the job's output,
then the run's summary; the exit code is the run's (0 succeeded, 130 interrupted, 1 failed).

Ctrl-C while following: on a terminal, runner asks whether to cancel the job; yes sends scancel (runner
writes a checkpoint and stops; submitting the same spec again resumes it) and follows the job to its end,
no leaves it running. Without a terminal to ask, Ctrl-C cancels the job (as srun's does).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from runner.box import run_root
from runner.commands.plan import plan_spec
from runner.errors import ExitCode, RunnerError, run_exit_code

POLL_S = 1.0
SETTLE_S = 90
"""After Slurm says the job ended, how long its manifest may still say `running`: processes that were
cancelled get KillWait (30 s by default) to write their checkpoint and record the end."""


def submit(spec: str, runs_dir: str | None, *, partition: str | None = None, account: str | None = None,
           time_limit: str | None = None, config_file: str | None = None, detach: bool = False,
           dry_run: bool = False, quiet: bool = False) -> int:
    from runner.launch import slurm
    from runner.plan.render import render

    root = run_root(runs_dir)
    config = slurm.load_config(slurm.config_path(config_file), required=bool(config_file), partition=partition,
                               account=account, time=time_limit)
    plan = plan_spec(spec, root, machine=config.machine())
    if plan is None:
        return ExitCode.INVALID
    if not quiet:
        print(render(plan, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    submission = slurm.prepare(plan, root, config)
    if dry_run:
        print(submission.script.read_text(), end="")
        print(f"\nwritten, not submitted: {submission.script} (submit it with: sbatch {submission.script})")
        return ExitCode.OK
    job_id = slurm.submit(submission.script)
    print(f"submitted Slurm job {job_id}: {submission.script}", flush=True)
    if detach:
        print(f"follow it: runner submit --attach {job_id}    cancel it: scancel {job_id}")
        return ExitCode.OK
    return follow(job_id, submission)


def attach(job_id: str) -> int:
    """Follow a job that runner submit submitted earlier."""
    from runner.launch import slurm

    job = slurm.status(job_id)
    if job is None:
        raise RunnerError(f"Slurm does not know job {job_id} (any more)",
                          "a job is remembered for MinJobAge seconds after it ends; its run's manifest is under "
                          "the run root: <outputs.dir>/<name>/<run id>/manifest.json")
    submission = slurm.submission_of(job)
    if submission is None:
        raise RunnerError(f"job {job_id} was not submitted by runner submit (its script is {job.script})")
    return follow(job_id, submission)


def follow(job_id: str, submission) -> int:
    """Print the job's state changes and output until it ends; then the run's summary."""
    from runner.launch import slurm

    output, offset, shown, cancelled = submission.output(job_id), 0, None, False
    while True:
        try:
            job = slurm.status(job_id)
            offset = _print_new(output, offset)
            state = "forgotten by Slurm" if job is None else _describe(job)
            if state != shown:
                print(f"[slurm] job {job_id}: {state}", flush=True)
                shown = state
            if job is None or job.finished:
                break
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            if cancelled:
                continue
            if not _cancel_wanted(job_id):
                print(f"\nstopped following; job {job_id} keeps running. Follow it: runner submit --attach "
                      f"{job_id}    cancel it: scancel {job_id}")
                return ExitCode.INTERRUPTED
            slurm.cancel(job_id)
            cancelled = True
            print(f"[slurm] job {job_id}: cancelling (runner writes a checkpoint and stops)", flush=True)
    return _outcome(job_id, submission, output, offset)


def _describe(job) -> str:
    text = job.state + (f" ({job.reason})" if job.reason else "")
    if job.state == "RUNNING":
        text += f" on {job.nodes}"
    if job.finished and job.state != "COMPLETED":
        text += f", exit code {job.exit_code}"
    return text


def _outcome(job_id: str, submission, output: Path, offset: int) -> int:
    """The run's end, once its manifest says it (the job's output above holds the run's own summary)."""
    from runner.launch import slurm
    from runner.rundir import RunDirectory

    deadline = time.monotonic() + SETTLE_S
    while True:
        offset = _print_new(output, offset)
        record = slurm.run_of(submission, job_id)
        manifest = RunDirectory(Path(record.run_dir)).read_manifest() if record else None
        if (manifest is not None and manifest.state != "running") or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    _print_new(output, offset, everything=True)
    if manifest is None:
        print(f"job {job_id} ended before runner started a run; its output: {output}")
        return ExitCode.INVALID
    print(f"[runner] {manifest.name}: {manifest.state.upper()}  ({record.run_dir}/manifest.json)")
    if manifest.error:
        print(f"  {manifest.error.kind}: {manifest.error.message}" + (
            f"\n  hint: {manifest.error.hint}" if manifest.error.hint else ""))
    if manifest.state == "running":
        print(f"  still running {SETTLE_S} s after the job ended: its processes were killed before they could "
              "record the end; submitting the same spec again resumes the run")
        return ExitCode.INVALID
    return run_exit_code(manifest.state)


def _print_new(output: Path, offset: int, everything: bool = False) -> int:
    """Print the job's new complete lines (all of it with `everything`), its JSON events rendered for a
    person (runner.logview); returns the offset after what was printed."""
    from runner.logview import render_text

    try:
        with open(output, "rb") as stream:
            stream.seek(offset)
            chunk = stream.read()
    except OSError:  # not created yet (a pending job), or not yet visible here
        return offset
    if not everything:
        chunk = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for its end
    if chunk:
        sys.stdout.write(render_text(chunk.decode("utf-8", errors="replace")) + "\n")
        sys.stdout.flush()
    return offset + len(chunk)


def _cancel_wanted(job_id: str) -> bool:
    if not sys.stdin.isatty():
        return True
    try:
        answer = input(f"\ncancel Slurm job {job_id}? [y/N] ")
    except (KeyboardInterrupt, EOFError):
        return False
    return answer.strip().lower() in ("y", "yes")
