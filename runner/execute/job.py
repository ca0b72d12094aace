"""Run a plan: the run directory, the manifest at every state change, and the steps in order.

    start (or resume) -> load -> data -> samples before -> trainable -> train -> verify
    -> samples after -> save -> card and plot -> succeeded

Any failure still writes the manifest, with the error's kind, message and hint.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

import torch

from runner.errors import ExitCode, RunnerError
from runner.execute import card, loading, sharding
from runner.execute import trainable as trained
from runner.execute.context import Context, Trained
from runner.execute.data import TooManyRejected, encoder_for, prepare, sample_prompts
from runner.execute.events import EventLog, MetricsLog
from runner.execute.samples import generate
from runner.execute.save import save_final
from runner.fsutil import file_sha256, write_atomically
from runner.manifest import (Artifact, Attempt, DataRecord, Environment, GitRecord, Manifest, Metrics, RunError,
                             Sample, Timings)
from runner.plan.identity import versions
from runner.plan.models import Plan
from runner.rundir import RunDirectory, new_run, now, plan_sha256, process_alive, resumable_run, runs_folder

WORKER_RUN_DIR = "RUNNER_RUN_DIR"
"""Set for the worker processes of a multi-process run: the run directory they share."""


def run_plan(plan: Plan, *, run_root: Path, spec_text: str | None = None, console: bool = True) -> tuple[int, Path]:
    """Train `plan`; return (exit code, run directory)."""
    run, manifest = _start(plan, run_root, spec_text)
    if plan.device.count > 1 and not os.environ.get(WORKER_RUN_DIR):
        return _launch_workers(plan, run, run_root), run.path
    if os.environ.get(WORKER_RUN_DIR):
        _die_with_parent(signal.SIGKILL)  # a worker whose torchrun was killed must not go on training
    rank = _rank()
    events = EventLog(run.events if rank == 0 else run.path / f"events-rank{rank}.jsonl", console=console and rank == 0)
    stop = threading.Event()
    restore = _on_signals(stop, events)
    events.event("run_started", run_dir=str(run.path), attempt=manifest.attempts[-1].number, plan=plan.name,
                 method=plan.method, resumed_from_step=manifest.attempts[-1].resumed_from_step)
    try:
        state = _train(plan, run, manifest, events, stop)
    except TooManyRejected as error:
        state = _fail(manifest, "data", error.message, error.hint)
    except trained.IntegrityError as error:
        state = _fail(manifest, "integrity", error.message, error.hint)
    except (torch.OutOfMemoryError, MemoryError) as error:
        state = _fail(manifest, "oom", f"out of memory: {str(error).splitlines()[0] if str(error) else 'MemoryError'}",
                      "lower training.micro_batch_size, set hardware.gradient_checkpointing: true, "
                      "or use trainable.mode: lora")
    except KeyboardInterrupt:
        state = _fail(manifest, "interrupted", "stopped by a second signal before a checkpoint was written",
                      "run the same plan again to resume from the last checkpoint", state="interrupted")
    except RunnerError as error:
        state = _fail(manifest, "runtime", error.message, error.hint)
    except Exception as error:  # the manifest must record any failure; the traceback says where
        tail = "".join(traceback.format_exception(error)[-6:])
        state = _fail(manifest, "runtime", f"{type(error).__name__}: {error}", None, tail)
    finally:
        restore()
    _finish(run, manifest, state)
    events.event("run_finished", state=state, run_dir=str(run.path),
                 error=manifest.error.message if manifest.error else None)
    events.close()
    code = {"succeeded": ExitCode.OK, "interrupted": ExitCode.INTERRUPTED}.get(state, ExitCode.INVALID)
    return int(code), run.path


# --- start, resume, finish ---------------------------------------------------------------------

def _start(plan: Plan, run_root: Path, spec_text: str | None) -> tuple[RunDirectory, Manifest]:
    folder = runs_folder(run_root, plan)
    plan_hash = plan_sha256(plan)
    worker_of = os.environ.get(WORKER_RUN_DIR)
    if worker_of:  # a worker process of a multi-process run: the launching process made the attempt
        run = RunDirectory(Path(worker_of))
        return run, run.read_manifest()
    run = resumable_run(folder, plan_hash) or new_run(folder, plan_hash)
    manifest = run.read_manifest()
    if manifest is not None and manifest.attempts and manifest.attempts[-1].state == "running":
        last = manifest.attempts[-1]
        if process_alive(last.pid, last.host):
            raise RunnerError(f"this plan is already running in {run.path} (pid {last.pid} on {last.host})",
                              "wait for it, or stop it (SIGTERM checkpoints) and run again to resume")
        last.state = "killed"
    checkpoint = run.latest_checkpoint()
    resumed_from = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0
    if manifest is None:
        write_atomically(run.plan, plan.model_dump_json(indent=2) + "\n")
        if spec_text is not None:
            write_atomically(run.spec, spec_text)
        manifest = Manifest(
            run_id=run.run_id, name=plan.name, method=plan.method, state="running", attempts=[],
            spec_path=plan.inputs.spec_path, spec_sha256=plan.inputs.spec_sha256, plan_sha256=plan_hash, plan=plan,
            base_model=plan.inputs.base_model, environment=_environment(), git=_git(Path(plan.inputs.spec_path)),
            timings=Timings(started_at=now()))
    else:  # resumed: the same run, and this attempt runs this plan (its layout may differ: another device count)
        write_atomically(run.plan, plan.model_dump_json(indent=2) + "\n")
        manifest.plan = plan
    strategy = plan.resolved.get("hardware.strategy")
    manifest.attempts.append(Attempt(number=len(manifest.attempts) + 1, started_at=now(),
                                     resumed_from_step=resumed_from, pid=os.getpid(), host=socket.gethostname(),
                                     layout=f"{plan.device.type} x{plan.device.count}, "
                                            f"{strategy.value if strategy else 'ddp'}"))
    manifest.state, manifest.error, manifest.finished_at = "running", None, None
    run.write_manifest(manifest)
    return run, manifest


WORKER_SHUTDOWN_S = 900
"""How long torchrun lets its workers finish a step and write a checkpoint after a signal."""


def _launch_workers(plan: Plan, run: RunDirectory, run_root: Path) -> int:
    """Data-parallel or sharded training: one process per device under torchrun, sharing this run
    directory. torchrun and each of its workers run in sessions of their own, so every signal comes
    through here, once: SIGINT/SIGTERM go to torchrun, which passes them to the workers (they
    checkpoint and stop); when this process dies (kill -9), torchrun and the workers die with it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={plan.device.count}",
               f"--shutdown-timeout={WORKER_SHUTDOWN_S}",
               "-m", "runner", "run", "--plan", str(run.plan), "--runs-dir", str(run_root)]
    torchrun = subprocess.Popen(command, env={**os.environ, WORKER_RUN_DIR: str(run.path)}, start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
    forward = {sig: signal.signal(sig, lambda signum, frame: torchrun.send_signal(signum))
               for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = torchrun.wait()
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)
    manifest = run.read_manifest()
    if manifest.state == "running":  # the workers died without recording why
        _fail(manifest, "runtime", f"the worker processes exited with code {returncode}", None)
        _finish(run, manifest, "failed")
    return {"succeeded": 0, "interrupted": int(ExitCode.INTERRUPTED)}.get(manifest.state, int(ExitCode.INVALID))


def _fail(manifest: Manifest, kind: str, message: str, hint: str | None, tail: str | None = None,
          state: str = "failed") -> str:
    manifest.error = RunError(kind=kind, message=message, hint=hint, traceback=tail)
    return state


def _finish(run: RunDirectory, manifest: Manifest, state: str) -> None:
    manifest.state = state
    manifest.finished_at = manifest.timings.finished_at = now()
    manifest.attempts[-1].finished_at, manifest.attempts[-1].state = manifest.finished_at, state
    manifest.timings.duration_s = round(sum(_seconds(a) for a in manifest.attempts), 2)
    manifest.metrics.peak_memory_bytes = _peak_memory()
    if _is_rank_zero():
        run.write_manifest(manifest)


def _seconds(attempt: Attempt) -> float:
    if attempt.finished_at is None:
        return 0.0
    return (datetime.fromisoformat(attempt.finished_at) - datetime.fromisoformat(attempt.started_at)).total_seconds()


# --- the run itself ----------------------------------------------------------------------------

def _train(plan: Plan, run: RunDirectory, manifest: Manifest, events: EventLog, stop: threading.Event) -> str:
    _quiet_libraries()
    torch.manual_seed(plan.value("training.seed"))
    started = time.monotonic()
    location = loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    sharded = sharding.is_sharded(plan)
    if sharded:  # built on the meta device with its trainable selection; each process reads its slices
        model = sharding.build(plan, location)
    else:
        model = loading.load_model(location, plan.method, loading.weights_dtype(plan),
                                   pad_token_id=tokenizer.pad_token_id)
        if plan.value("hardware.device") == "cuda":
            model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    manifest.timings.load_s = round(time.monotonic() - started, 2)
    events.event("model_loaded", model=location.describe(), seconds=manifest.timings.load_s)

    splits = prepare(plan, tokenizer)
    _record_data(plan, run, manifest, splits)
    events.event("data_ready", **{role: len(split.examples) for role, split in splits.items()},
                 rejected=sum(len(split.rejected) for split in splits.values()))

    encoder = encoder_for(plan, tokenizer)
    prompts = sample_prompts(plan, encoder) if plan.method != "reward" else []
    if prompts and not manifest.samples:
        befores = generate(model, tokenizer, [rendered for _, rendered in prompts], templated=encoder.use_chat_template)
        manifest.samples = [Sample(prompt=shown, before=answer) for (shown, _), answer in zip(prompts, befores)]

    before = trained.fingerprints(model)
    if not sharded:
        model = trained.apply(model, plan)
    if _is_rank_zero():
        run.write_manifest(manifest)

    checkpoint = run.latest_checkpoint()
    recipe = importlib.import_module(f"runner.methods.{plan.method}")
    metrics = MetricsLog(run.metrics)
    training_started = time.monotonic()
    result = recipe.train(Context(plan, run, model, tokenizer, splits, events, metrics, stop, checkpoint))
    manifest.timings.train_s = round(time.monotonic() - training_started, 2)
    records = metrics.read()
    _record_metrics(manifest, result, records)
    if stop.is_set():
        manifest.error = RunError(kind="interrupted", message="stopped by a signal after writing a checkpoint",
                                  hint="run the same plan again to resume from the last checkpoint")
        return "interrupted"
    if not _is_rank_zero() and not sharded:
        return "succeeded"

    # Under FSDP every process takes part until the model is gathered on rank 0.
    after, adapters = trained.fingerprints(result.model), trained.adapters_changed(result.model)
    afters = generate(result.model, tokenizer, [rendered for _, rendered in prompts],
                      templated=encoder.use_chat_template) if prompts else []
    model = sharding.gather(result.model, plan, location) if sharded else result.model
    if not _is_rank_zero():
        return "succeeded"
    manifest.parameters = trained.compare(before, after, adapters, plan)
    events.event("parameters_compared", changed=len(manifest.parameters.changed),
                 unexpected=manifest.parameters.unexpected[:5], adapters_changed=manifest.parameters.adapters_changed)
    if manifest.parameters.unexpected:
        raise trained.IntegrityError(
            f"{len(manifest.parameters.unexpected)} parameter(s) outside the planned trainable set changed: "
            + ", ".join(manifest.parameters.unexpected[:5]), "this is a bug in runner; please report it")

    for sample, answer in zip(manifest.samples, afters):
        sample.after = answer
        events.event("sample", prompt=sample.prompt, before=sample.before, after=sample.after)

    folder = save_final(model, tokenizer, plan, run)
    card.loss_plot(run.loss_plot, records, f"{plan.name} ({plan.method})")
    manifest.state = "succeeded"
    card.write_card(folder, manifest)
    manifest.artifacts = _artifacts(run, folder)
    return "succeeded"


def _record_data(plan: Plan, run: RunDirectory, manifest: Manifest, splits) -> None:
    rejected = [row for split in splits.values() for row in split.rejected]
    if rejected and _is_rank_zero():
        write_atomically(run.rejected, "".join(json.dumps(row) + "\n" for row in rejected))
    hashes = {data.role: data.sha256 for data in plan.inputs.data}
    manifest.data = [DataRecord(role=role, path=str(split.path), sha256=hashes[role], rows=split.rows,
                                used_rows=len(split.examples), rejected_rows=len(split.rejected))
                     for role, split in splits.items()]


def _record_metrics(manifest: Manifest, result: Trained, records: list[dict]) -> None:
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    last = next((r for r in reversed(records) if "loss" in r or "objective/scores" in r), {})
    method = {key: value for key, value in last.items() if "/" in key and isinstance(value, (int, float))}
    speeds = sorted(r["tokens_per_second"] for r in records if r.get("tokens_per_second"))
    manifest.metrics = Metrics(
        steps=result.steps, train_loss=losses[-1] if losses else None,
        first_loss=losses[0] if losses else None, eval_loss=evals[-1] if evals else None,
        tokens_per_second=speeds[len(speeds) // 2] if speeds else None,
        trained_tokens=result.tokens_seen or None, method=method)


def _artifacts(run: RunDirectory, folder: Path) -> list[Artifact]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    paths += [p for p in (run.loss_plot, run.metrics, run.rejected, run.plan) if p.is_file()]
    return [Artifact(path=str(p.relative_to(run.path)), sha256=file_sha256(p), size=p.stat().st_size) for p in paths]


# --- environment, signals, helpers --------------------------------------------------------------

def _environment() -> Environment:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return Environment(python=platform.python_version(), platform=platform.platform(), host=socket.gethostname(),
                       versions=versions(), cuda=torch.version.cuda, gpus=gpus)


def _git(spec_path: Path) -> GitRecord | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(spec_path.parent), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        return GitRecord(repository=git("rev-parse", "--show-toplevel"), commit=git("rev-parse", "HEAD"),
                         dirty=bool(git("status", "--porcelain", "--untracked-files=no")))
    except (OSError, subprocess.SubprocessError):
        return None


def _on_signals(stop: threading.Event, events: EventLog):
    """First SIGINT/SIGTERM: checkpoint at the end of the step and stop. Second: stop now."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        events.event("stopping", signal=signal.Signals(signum).name,
                     detail="a checkpoint is written at the end of this step; a second signal stops at once")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def _die_with_parent(signum: int) -> None:
    """Have the kernel send `signum` to this process when its parent dies (Linux; elsewhere nothing)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request
        os.kill(os.getpid(), signum)


def _peak_memory() -> int:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _is_rank_zero() -> bool:
    return _rank() == 0


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
