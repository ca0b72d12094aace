"""`runner run SPEC` (validate + plan + run) and `runner run --plan plan.json` (exactly a saved plan)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from runner import confine
from runner.box import run_root
from runner.commands.plan import plan_spec
from runner.errors import ExitCode, UsageError
from runner.readers import read_regular
from runner.spec.jobs import MAX_SPEC_BYTES
from runner.terminal import printable


def run(spec: str | None, plan_file: str | None, runs_dir: str | None, quiet: bool = False,
        events: bool = False, *, rendezvous: str | None = None, node_rank: int | None = None,
        launch_id: str | None = None) -> int:
    """`events`: JSON event lines on stdout even on a terminal. `rendezvous`, `node_rank`, `launch_id`:
    this node's part of a plan on several nodes (else from the environment; see
    runner.launch.local.placement)."""
    from runner.execute.events import guard_console
    from runner.execute.library_output import quiet_libraries
    from runner.plan.render import render

    guard_console()  # a console that cannot be written (a full disk, a closed pipe) loses lines, never the run
    quiet_libraries()
    root = run_root(runs_dir)
    json_lines = events or not sys.stdout.isatty()
    human = sys.stderr if json_lines else sys.stdout  # stdout carries JSON lines only, when it does
    if plan_file:
        plan = _load_plan(Path(plan_file))
        if plan.device.what_if:
            raise UsageError(f"{plan_file} was planned for a described machine (--machine), not this one",
                             f"make a plan here: runner plan {plan.inputs.spec_path} --out {plan_file}")
        with confine.applied(plan.confinement):
            return _run(plan, plan_file, spec, root, json_lines, human, rendezvous, node_rank, launch_id)
    plan = plan_spec(spec, root)
    if plan is None:
        return ExitCode.INVALID
    if not quiet:
        print(render(plan, colour=human.isatty() and "NO_COLOR" not in os.environ), file=human)
    return _run(plan, plan_file, spec, root, json_lines, human, rendezvous, node_rank, launch_id)


def _run(plan, plan_file: str | None, spec: str | None, root: Path, json_lines: bool, human, rendezvous: str | None,
         node_rank: int | None, launch_id: str | None) -> int:
    if plan_file:
        from runner.plan.identity import check_fresh

        check_fresh(plan, root)  # under the plan's confinement: a changed input is read only where it may be
    spec_text = read_regular(Path(plan.inputs.spec_path), MAX_SPEC_BYTES).decode("utf-8")

    from runner.launch.local import WORKER_RUN_DIR, Placement, placement

    worker = bool(os.environ.get(WORKER_RUN_DIR))  # node 0's launching process made the attempt
    place = Placement() if worker else placement(plan.device.nodes, rendezvous=rendezvous, node_rank=node_rank,
                                                 launch_id=launch_id)
    if place.nodes > 1 and not plan_file:
        raise UsageError(f"{plan.name} runs on {place.nodes} nodes; every node must run the same saved plan",
                         f"runner plan {spec} --out plan.json, then on every node: runner run --plan plan.json ...")

    from runner.execute.job import run_plan
    from runner.rundir import RunDirectory

    code, run_dir = run_plan(plan, run_root=root, spec_text=spec_text, json_events=json_lines, place=place)
    if worker:
        return code
    if place.leads:  # node 0 reports the whole run
        print(printable(summary(RunDirectory(run_dir))), file=human)  # samples are the model's text
    else:
        print(f"node {place.node_rank}: its workers ended with exit code {code}; node 0 records the run in "
              f"{run_dir}", file=human)
    return code


def _load_plan(path: Path):
    from runner.rundir import read_plan

    if not path.is_file():
        raise UsageError(f"{path}: no such plan file")
    return read_plan(path)


def _metric_records(run) -> list[dict]:
    """The training steps' metric lines (not the eval ones)."""
    if not run.metrics.is_file():
        return []
    records = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    return [r for r in records if not any(key.startswith("eval_") for key in r)]


def summary(run) -> str:
    manifest = run.read_manifest()
    if manifest is None:
        return f"run directory: {run.path} (no manifest)"
    lines = [f"\n{manifest.name}: {manifest.state.upper()}  ({run.path})"]
    if manifest.error:
        lines.append(f"  {manifest.error.kind}: {manifest.error.message}")
        if manifest.error.hint:
            lines.append(f"  hint: {manifest.error.hint}")
    metrics = manifest.metrics
    if metrics.train_loss is not None:
        lines.append(f"  loss {metrics.first_loss:.4f} -> {metrics.train_loss:.4f} over {metrics.steps} steps"
                     + (f", eval loss {metrics.eval_loss:.4f}" if metrics.eval_loss is not None else "")
                     + (f", {metrics.tokens_per_second:,.0f} tokens/s" if metrics.tokens_per_second else ""))
    quality = {key: value for key, value in manifest.metrics.method.items() if "accurac" in key or "margin" in key}
    if quality:
        lines.append("  " + ", ".join(f"{key} {value:.3f}" for key, value in quality.items()))
    scores = [value for key, value in manifest.metrics.method.items() if key == "objective/scores"]
    if scores:
        lines.append(f"  mean score of the last iteration: {scores[0]:.4f} ({metrics.steps} iterations)")
    logged = (record.get("reward") for record in _metric_records(run))  # TRL's key: the mean reward of a step
    rewards = [value for value in logged if isinstance(value, (int, float))]
    if rewards:
        lines.append(f"  mean reward per step: {rewards[0]:.3f} at the first, {rewards[-1]:.3f} at the last "
                     f"({len(rewards)} steps logged)")
    if manifest.reward and manifest.reward.trained:
        base, trained = manifest.reward.base, manifest.reward.trained
        checks = ", ".join(f"{name} {base.checks[name]:.2f} -> {trained.checks[name]:.2f}" for name in base.checks)
        lines.append(f"  reward checks on {manifest.reward.prompts} eval prompts: base {base.total:.3f} -> trained "
                     f"{trained.total:.3f} ({checks})")
    if manifest.parameters:
        p = manifest.parameters
        adapters = f", {p.adapters_changed} LoRA adapter tensors" if p.adapters_changed else ""
        lines.append(f"  changed parameters: {len(p.changed)} of the base's{adapters}; outside the plan: "
                     f"{len(p.unexpected)}")
    for sample in manifest.samples:
        lines += [f"  Q: {sample.prompt}", f"     before: {sample.before}"]
        if sample.after is not None:  # a run that stopped early has no trained answer
            lines.append(f"     after:  {sample.after}")
    if manifest.evals is not None:
        from runner.evals.render import table

        timings = manifest.timings
        lines += table(manifest.evals)
        lines.append(f"  evals took {timings.eval_s or 0:.0f} s" + (f" (training {timings.train_s:.0f} s)"
                     if timings.train_s else "") + f"; per-row results in {run.path / 'evals'}")
    if manifest.timings.duration_s:
        lines.append(f"  took {manifest.timings.duration_s:.0f} s; manifest: {run.manifest_file}")
    return "\n".join(lines)
