"""Run a plan: the run directory, the manifest at every state change, and the steps in order.

    start (or resume) -> load -> data -> samples before -> trainable -> train -> verify
    -> samples after -> save -> card and plot -> succeeded

Any failure still writes the manifest, with the error's kind, message and hint.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import time
import traceback
from datetime import datetime
from pathlib import Path

import torch

from runner.errors import RunnerError, run_exit_code
from runner.execute import card, library_output, loading, sharding
from runner.execute import trainable as trained
from runner.execute.context import Context, Trained
from runner.execute.data import TooManyRejected, encoder_for, prepare, sample_prompts
from runner.execute.events import Diverged, EventLog, MetricsLog
from runner.execute.library_output import quiet_libraries
from runner.execute.reward_check import RewardCheck
from runner.execute.samples import generate
from runner.execute.save import save_final
from runner.execute.settings import RunSettings
from runner.execute.stopping import StopRequest, on_signals
from runner.execute.trackers import open_sinks
from runner.fsutil import file_sha256, write_atomically
from runner.launch import records
from runner.launch.local import (JOIN_TIMEOUT_S, WORKER_RUN_DIR, Placement, die_with_parent, report_worker_failure,
                                 run_workers)
from runner.manifest import (Artifact, Attempt, DataRecord, Environment, GitRecord, Manifest, Metrics,
                             RewardComparison, RunError, Sample, Timings)
from runner.methods import registry
from runner.plan.identity import versions
from runner.plan.models import Plan
from runner.rundir import RunDirectory, new_run, now, plan_sha256, process_alive, resumable_run, runs_folder

def run_plan(plan: Plan, *, run_root: Path, spec_text: str | None = None, console: bool = True,
             json_events: bool | None = None, place: Placement = Placement()) -> tuple[int, Path]:
    """Train `plan`, or this node's part of it; return (exit code, run directory). `json_events`: the
    event lines on stdout too (default: when stdout is not a terminal)."""
    # Start-up: the method, its recipe and every setting it reads, before a run directory exists.
    descriptor = registry.get(plan.method)
    recipe = descriptor.load_recipe()
    settings = RunSettings.of(plan, descriptor)
    quiet_libraries()
    worker_of = os.environ.get(WORKER_RUN_DIR)
    if worker_of:  # a worker process of a multi-process run: node 0's launching process made the attempt
        die_with_parent(signal.SIGKILL)
        run = RunDirectory(Path(worker_of))
        manifest = run.read_manifest()
    elif not place.leads:
        return _join(plan, run_root, place)
    else:
        run, manifest = _start(plan, run_root, spec_text, place)
        if plan.device.count > 1:
            return _launch_workers(plan, run, run_root, place, manifest.attempts[-1].number), run.path
    rank = _rank()
    events = EventLog(run.events if rank == 0 else run.path / f"events-rank{rank}.jsonl", console=console and rank == 0,
                      json_lines=json_events)
    library_output.to_events(events)
    metrics = MetricsLog(run.metrics, on_error=lambda name, error: events.warning(
        "tracker_failed", f"{name} stopped receiving metrics: {error}", tracker=name))
    stop = StopRequest(events)
    restore = on_signals(stop)
    events.event("run_started", run_dir=str(run.path), attempt=manifest.attempts[-1].number, plan=plan.name,
                 method=plan.method, resumed_from_step=manifest.attempts[-1].resumed_from_step)
    state = "failed"
    unexpected: Exception | None = None
    try:
        if rank == 0:
            metrics.sinks = open_sinks(plan, run, run_root, manifest.trackers)
            manifest.trackers = {name: sink.record() for name, sink in metrics.sinks.items()}
        state = _train(plan, descriptor, recipe, settings, run, manifest, events, stop, metrics)
    except TooManyRejected as error:
        state = _fail(manifest, "data", error.message, error.hint)
    except trained.IntegrityError as error:
        state = _fail(manifest, "integrity", error.message, error.hint)
    except (torch.OutOfMemoryError, MemoryError) as error:
        state = _fail(manifest, "oom", f"out of memory: {str(error).splitlines()[0] if str(error) else 'MemoryError'}",
                      "lower training.micro_batch_size, set hardware.gradient_checkpointing: true, "
                      "or use trainable.mode: lora")
    except Diverged as error:
        state = _fail(manifest, "diverged", error.message, error.hint)
    except GateMissed as error:
        state = _fail(manifest, "gate", error.message, error.hint)
    except KeyboardInterrupt:
        state = _fail(manifest, "interrupted", "stopped by a second signal before a checkpoint was written",
                      "run the same plan again to resume from the last checkpoint", state="interrupted")
    except RunnerError as error:
        state = _fail(manifest, "runtime", error.message, error.hint)
    except Exception as error:  # the manifest must record any failure; the traceback says where
        tail = "".join(traceback.format_exception(error)[-6:])
        state = _fail(manifest, "runtime", f"{type(error).__name__}: {error}", None, tail)
        unexpected = error
    finally:
        restore()
    metrics.close(state)
    if worker_of and state == "failed":  # node 0's launcher tells the first failure from its consequences
        report_worker_failure(run.path, manifest.attempts[-1].number, rank, manifest.error, unexpected)
    _finish(run, manifest, state)
    if state == "succeeded" and rank == 0 and not settings.training.keep_checkpoints_after_success:
        _remove_checkpoints(run, manifest, events)
    events.event("run_finished", state=state, run_dir=str(run.path),
                 error=manifest.error.message if manifest.error else None)
    library_output.detach()
    events.close()
    if worker_of and state == "interrupted":
        # A worker's exit code is for torchrun, which stops the other workers at once when one exits non-zero:
        # in the middle of the checkpoint that every rank agreed to write, when the signal reached one of them
        # only. The manifest says the run was interrupted, and node 0's launcher exits with that.
        return 0, run.path
    return run_exit_code(state), run.path


# --- start, resume, finish ---------------------------------------------------------------------

def _start(plan: Plan, run_root: Path, spec_text: str | None, place: Placement) -> tuple[RunDirectory, Manifest]:
    folder = runs_folder(run_root, plan)
    plan_hash = plan_sha256(plan)
    if place.launch_id:
        records.ensure_unused(folder, place.launch_id)
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
            base_model=plan.inputs.base_model, environment=_environment(),
            git=_git(Path(plan.inputs.spec_source or plan.inputs.spec_path)),
            timings=Timings(started_at=now()))
    else:  # resumed: the same run, and this attempt runs this plan (its layout may differ: another device count;
        # its evals may differ: they are not what makes the run)
        write_atomically(run.plan, plan.model_dump_json(indent=2) + "\n")
        if spec_text is not None:
            write_atomically(run.spec, spec_text)
        manifest.plan, manifest.spec_sha256 = plan, plan.inputs.spec_sha256
    manifest.attempts.append(Attempt(number=len(manifest.attempts) + 1, started_at=now(),
                                     resumed_from_step=resumed_from, pid=os.getpid(), host=socket.gethostname(),
                                     layout=f"{plan.device.type} x{plan.device.count}, "
                                            f"{plan.settings.hardware.strategy.value}"))
    manifest.state, manifest.error, manifest.finished_at = "running", None, None
    run.write_manifest(manifest)
    if place.launch_id:  # after the manifest: the other nodes' workers read it
        records.record_launch(folder, place.launch_id,
                              records.LaunchRecord(str(run.path), manifest.attempts[-1].number, place.nodes))
    return run, manifest


def _join(plan: Plan, run_root: Path, place: Placement) -> tuple[int, Path]:
    """A node other than node 0: train in the run that node 0 chose for this launch."""
    record = records.wait_for_launch(runs_folder(run_root, plan), place.launch_id, JOIN_TIMEOUT_S)
    run = RunDirectory(Path(record.run_dir))
    manifest = run.read_manifest()
    if manifest is None or manifest.plan_sha256 != plan_sha256(plan):
        raise RunnerError(f"launch {place.launch_id!r} trains {run.path}, which is not a run of this plan",
                          "start every node with the same plan file")
    return _launch_workers(plan, run, run_root, place, record.attempt), run.path


def _launch_workers(plan: Plan, run: RunDirectory, run_root: Path, place: Placement, attempt: int) -> int:
    """This node's workers (runner.launch.local); node 0 then records the outcome of the whole launch: the
    first failure on any node, if there was one."""
    ended = run_workers(run.plan, run.path, run_root, plan.device.per_node, place, attempt)
    if not place.leads:
        return ended.exit_code
    manifest = run.read_manifest()
    state, error = records.verdict(manifest.state, ended.cause, ended.signalled, ended.exit_code)
    if error is not None:
        _fail(manifest, error.kind, error.summary, error.hint, error.traceback)
        _finish(run, manifest, state)
    return run_exit_code(manifest.state)


def _remove_checkpoints(run: RunDirectory, manifest: Manifest, events: EventLog) -> None:
    """Checkpoints are there to resume an unfinished run; a succeeded one has its final model saved and
    hashed, so they go (outputs.keep_checkpoints_after_success keeps them). The manifest already says
    succeeded: a run stopped in between keeps its checkpoints, and nothing else changes."""
    if not run.checkpoints.is_dir():
        return
    freed = sum(path.stat().st_size for path in run.checkpoints.rglob("*") if path.is_file())
    manifest.checkpoints_removed_bytes = freed
    run.write_manifest(manifest)
    shutil.rmtree(run.checkpoints)
    events.event("checkpoints_removed", bytes=freed)


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

def _train(plan: Plan, descriptor: registry.MethodDescriptor, recipe, settings: RunSettings, run: RunDirectory,
           manifest: Manifest, events: EventLog, stop: StopRequest, metrics: MetricsLog) -> str:
    torch.manual_seed(settings.training.seed)
    started = time.monotonic()
    location = loading.location_of(plan)
    evals = stage_of(plan, run, manifest, events) if _is_rank_zero() else None
    if trained_before(run, manifest):  # an earlier attempt trained and saved it, then failed in its evals
        return _evaluate_saved(plan, run, manifest, evals, location, events, metrics) if _is_rank_zero() \
            else "succeeded"
    events.status(f"loading {location.describe()}")
    tokenizer = loading.load_tokenizer(location)
    sharded = settings.training.strategy == "fsdp"
    if sharded:  # built on the meta device with its trainable selection; each process reads its slices
        model = sharding.build(plan, location)
    else:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if settings.training.device == "cuda" else "cpu"
        model = loading.load_base(plan, descriptor.head, pad_token_id=tokenizer.pad_token_id, device=device)
        if plan.trainable.quantized is None:
            model.to(device)  # a quantized model was loaded there, each weight quantised where it lives
    manifest.timings.load_s = round(time.monotonic() - started, 2)
    manifest.weights = loading.weights_origin(location)
    events.event("model_loaded", model=location.describe(), seconds=manifest.timings.load_s)

    events.status("reading the data")
    splits = prepare(plan, tokenizer)
    _record_data(plan, run, manifest, splits)
    events.event("data_ready", **{role: len(split.examples) for role, split in splits.items()},
                 rejected=sum(len(split.rejected) for split in splits.values()))

    encoder = encoder_for(plan, tokenizer)
    prompts = sample_prompts(plan, encoder) if descriptor.generates else []
    if prompts and not manifest.samples:
        events.status(f"answering {len(prompts)} sample prompt(s) before training")
        befores = generate(model, tokenizer, [rendered for _, rendered in prompts], templated=encoder.use_chat_template)
        manifest.samples = [Sample(prompt=shown, before=answer) for (shown, _), answer in zip(prompts, befores)]
    reward_check = RewardCheck.of(plan, settings.method, splits)
    if reward_check and manifest.reward is None:
        events.status(f"scoring the base model's answers to {len(reward_check.rows)} eval prompts with the reward's "
                      "checks")
        manifest.reward = RewardComparison(prompts=len(reward_check.rows),
                                           base=reward_check.score(model, tokenizer, templated=encoder.use_chat_template))

    if evals is not None and plan.device.count == 1 and not sharded:  # the base, while in memory (else: after)
        _evaluate_base(evals, manifest, metrics, lambda: (model, tokenizer))
    before = trained.fingerprints(model)
    if not sharded:
        model = trained.apply(model, plan)
    if _is_rank_zero():
        run.write_manifest(manifest)

    training_started = time.monotonic()
    stop.requested()  # a signal while loading is reported now; the first step ends the run
    events.status("training")
    during = _during(plan, run, manifest, evals, tokenizer, metrics) if evals is not None and plan.evals.every \
        else None
    result = recipe.train(Context(plan, settings, run, model, tokenizer, splits, events, metrics, stop,
                                  run.latest_checkpoint(), during))
    events.keep_line()
    manifest.timings.train_s = round(time.monotonic() - training_started, 2)
    records = metrics.read()
    _record_metrics(manifest, result, records)
    if stop.requested():
        manifest.error = RunError(kind="interrupted", message="stopped by a signal after writing a checkpoint",
                                  hint="run the same plan again to resume from the last checkpoint")
        return "interrupted"
    if not _is_rank_zero() and not sharded:
        return "succeeded"

    # Under FSDP every process takes part until the model is gathered on rank 0.
    events.status("comparing every parameter with the base")
    after, adapters = trained.fingerprints(result.model), trained.adapters_changed(result.model)
    if prompts:
        events.status(f"answering {len(prompts)} sample prompt(s) after training")
    afters = generate(result.model, tokenizer, [rendered for _, rendered in prompts],
                      templated=encoder.use_chat_template) if prompts else []
    if reward_check and manifest.reward is not None:
        events.status("scoring the trained model's answers with the reward's checks")
        manifest.reward.trained = reward_check.score(result.model, tokenizer, templated=encoder.use_chat_template)
        events.event("reward_compared", prompts=manifest.reward.prompts, base=manifest.reward.base.model_dump(),
                     trained=manifest.reward.trained.model_dump())
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

    failed = None
    if evals is not None:  # before saving (a merged LoRA is folded while saved); the weights are saved anyway
        try:
            _evaluate_base(evals, manifest, metrics, lambda: _load_base(plan, location, descriptor))
            _evaluate_result(evals, manifest, metrics, model, tokenizer, plan)
        except Exception as error:  # noqa: BLE001 (re-raised once the weights are saved)
            failed = error
    events.status("saving")
    folder = save_final(model, tokenizer, plan, run)
    card.loss_plot(run.loss_plot, records, f"{plan.name} ({plan.method})")
    return _conclude(run, manifest, folder, failed)


def _conclude(run: RunDirectory, manifest: Manifest, folder: Path, failed: BaseException | None) -> str:
    """The result is saved: decide the gates, write the card and the artifacts, and end the run."""
    missed = [gate for gate in manifest.evals.gates if not gate.passed] if manifest.evals and not failed else []
    manifest.state = "succeeded" if not (failed or missed) else "failed"
    card.write_card(folder, manifest)
    manifest.artifacts = _artifacts(run, folder)
    if failed is not None:
        if isinstance(failed, RunnerError) and not failed.hint:
            failed.hint = RETRY_EVALS
        raise failed
    if missed:
        shown = "; ".join(f"{gate.condition} (scored {_value(gate.value)}" + (f": {gate.reason}" if gate.reason else "")
                          + ")" for gate in missed)
        raise GateMissed(f"the result missed {len(missed)} of {len(manifest.evals.gates)} gate(s): {shown}",
                         f"its weights are kept in {folder.name}/, and a spec built on it ({{job: {manifest.name}}}) "
                         "will not start; change the spec's evals.require and run it again: only the evals run again")
    return "succeeded"


class GateMissed(RunnerError):
    """The result missed a condition of evals.require."""


RETRY_EVALS = ("the model is trained and saved: run the same spec again (or `runner retry NAME` in the daemon) "
               "and only the evals run again")


def stage_of(plan: Plan, run: RunDirectory, manifest: Manifest, events: EventLog):
    """The eval stage of a run (None when its spec has no evals)."""
    if plan.evals is None:
        return None
    from runner.evals.stage import Stage, evals_spec

    return Stage(evals_spec(plan.spec), plan.evals, plan.inputs.spec_folder, run.path / "evals",
                 seed=plan.settings.training.seed.value, base=plan.inputs.base_model, record=manifest.evals,
                 say=events.status)


def trained_before(run: RunDirectory, manifest: Manifest) -> bool:
    """Whether an earlier attempt trained and saved the model (then failed in its evals, or missed a gate):
    running the plan again resumes at the evals."""
    return bool(manifest.parameters and manifest.artifacts and (run.model.is_dir() or run.adapter.is_dir()))


def _evaluate_saved(plan: Plan, run: RunDirectory, manifest: Manifest, evals, location, events: EventLog,
                    metrics: MetricsLog) -> str:
    """A run whose model an earlier attempt trained and saved, and that failed in its evals or missed a gate:
    run again (with its evals changed, or the cause of the failure fixed), it evaluates and decides again."""
    events.event("evals_resumed", detail="the model was trained and saved by an earlier attempt: evaluating it")
    descriptor = registry.get(plan.method)
    failed, manifest.evals = None, manifest.evals if evals is not None else None
    try:
        if evals is not None:
            _evaluate_base(evals, manifest, metrics, lambda: _load_base(plan, location, descriptor))
            model, tokenizer = loading.load_result(run, plan)
            _evaluate_result(evals, manifest, metrics, model.to(_device_of(plan)), tokenizer, plan)
    except Exception as error:  # noqa: BLE001 (the weights are saved: reported as the run's failure)
        failed = error
    folder = run.adapter if run.adapter.is_dir() and not run.model.is_dir() else run.model
    return _conclude(run, manifest, folder, failed)


def _load_base(plan: Plan, location, descriptor):
    """The base model for its evals, when it is not in memory (a run on several processes, a resumed run)."""
    tokenizer = loading.load_tokenizer(location)
    model = loading.load_model(location, descriptor.head, torch.float32, pad_token_id=tokenizer.pad_token_id)
    return model.to(_device_of(plan)), tokenizer


def _device_of(plan: Plan) -> str:
    return "cuda" if plan.device.type == "cuda" else "cpu"


def _evaluate_base(evals, manifest: Manifest, metrics: MetricsLog, load) -> None:
    """The base's results: from this run or the cache, else evaluated (`load()` gives the base and its
    tokenizer, only when needed); written at step 0 of metrics.jsonl, so a curve starts from the base."""
    fresh = manifest.evals is None
    started = time.monotonic()
    if evals.base_pending():
        model, tokenizer = load()
        evals.evaluate_base(model, tokenizer)
    manifest.evals = evals.record()
    _add_eval_time(manifest, started)
    if fresh and evals.scores_at("base"):
        metrics.write({"step": 0, **evals.scores_at("base")})


def _evaluate_result(evals, manifest: Manifest, metrics: MetricsLog, model, tokenizer, plan: Plan) -> None:
    started = time.monotonic()
    evals.evaluate_result(model, tokenizer)
    step = plan.steps.total_steps
    final = "adapter" if plan.settings.outputs.save.value == "adapter" else "model"
    evals.keep_best(evals.scores_at("trained"), step, lambda: final, final=True)
    manifest.evals = evals.record()
    _add_eval_time(manifest, started)
    metrics.write({"step": step, **evals.scores_at("trained")})


def _during(plan: Plan, run: RunDirectory, manifest: Manifest, evals, tokenizer, metrics: MetricsLog):
    """The evals while training: the `during` sets every evals.every steps (not at the last: the result is
    evaluated then), into metrics.jsonl; the best model by evals.keep_best kept in best/."""
    every, total = plan.evals.every, plan.steps.total_steps

    def during(model, step: int) -> None:
        if step % every or step >= total:
            return
        started = time.monotonic()
        found = evals.during(model, tokenizer)
        if found:
            metrics.write({"step": step, **found})
        evals.keep_best(found, step, lambda: save_final(model, tokenizer, plan, run, into=run.path / "best").name)
        manifest.evals = evals.record()
        _add_eval_time(manifest, started)
        run.write_manifest(manifest)

    return during


def _add_eval_time(manifest: Manifest, started: float) -> None:
    manifest.timings.eval_s = round((manifest.timings.eval_s or 0) + time.monotonic() - started, 2)


def _value(value: float | None) -> str:
    return "no score" if value is None else f"{value:.4g}"


def _record_data(plan: Plan, run: RunDirectory, manifest: Manifest, splits) -> None:
    rejected = [row for split in splits.values() for row in split.rejected]
    if rejected and _is_rank_zero():
        write_atomically(run.rejected, "".join(json.dumps(row) + "\n" for row in rejected))
    manifest.data = [DataRecord(role=role, source=part.identity.source, kind=part.identity.kind,
                                path=part.identity.path, revision=part.identity.revision, sha256=part.identity.sha256,
                                weight=part.identity.weight, rows=part.rows, used_rows=part.used,
                                rejected_rows=part.rejected)
                     for role, split in splits.items() for part in split.sources]


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


def _peak_memory() -> int:
    """What the plan's estimate predicts (runner.plan.memory): on a GPU what the device gave out, PyTorch's
    peak reservation plus the CUDA context (device memory in use less what PyTorch reserves now); on a CPU
    the process's peak resident memory."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        context = max(0, total - free - torch.cuda.memory_reserved())  # other processes' memory counts too
        return int(torch.cuda.max_memory_reserved() + context)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _is_rank_zero() -> bool:
    return _rank() == 0
