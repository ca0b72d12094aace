"""`runner eval TARGET`: the eval stage of a run, on any model.

TARGET is a run (a run folder, or the latest run of a spec file or spec name: its saved model, beside
its base), a model folder, or a hub id in the local cache. The evals are the run's spec's, or those of
an evals file (`--evals FILE`: YAML with an `evals:` section, as in a spec). Results go to a folder of
their own (--out; default: a new folder under the run's evals/, or ./evals/); the run's own results
and state are left as they are. Exit code 1 when a gate is missed, so CI can gate on it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runner.commands.plan import run_root
from runner.errors import ExitCode, RunnerError, UsageError


@dataclass
class Target:
    """What is evaluated: the model, where it came from, and what to compare it with."""

    describe: str
    load: object
    """() -> (model, tokenizer)"""
    base: object | None
    """The base's ModelIdentity (results side by side, cached by it), or None."""
    load_base: object | None
    plan: object | None = None
    """The run's plan, for a run."""
    out: Path | None = None


def evaluate(target: str, evals_file: str | None, base: str | None, out: str | None, runs_dir: str | None,
             output_format: str) -> int:
    from runner.execute.library_output import quiet_libraries

    quiet_libraries()
    chosen = _target(target, base, run_root(runs_dir))
    evals, folder, chat = _evals(chosen, evals_file)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    destination = Path(out) if out else (chosen.out or Path("evals")) / f"runner-eval-{stamp}"

    from runner.evals.render import table
    from runner.evals.stage import Stage
    from runner.plan.evals import plan_evals

    say = (lambda text: print(f"{text} ...", file=sys.stderr)) if output_format == "text" else (lambda text: None)
    model, tokenizer = chosen.load()
    seed = chosen.plan.value("training.seed") if chosen.plan else 0
    if chat is None:  # auto: as the run's training data, else whenever the tokenizer has a template
        has_template = bool(getattr(tokenizer, "chat_template", None))
        chat = chosen.plan.value("data.chat_template") if chosen.plan else has_template
    planned = plan_evals(evals, folder, tokenizer, chat, chosen.base, None, seed)
    stage = Stage(evals, planned, folder, destination, seed=seed, base=chosen.base, say=say)
    if chosen.load_base is not None and stage.base_pending():
        base_model, base_tokenizer = chosen.load_base()
        stage.evaluate_base(base_model, base_tokenizer)
        del base_model
    stage.evaluate_result(model, tokenizer)
    record = stage.record()
    if output_format == "json":
        print(json.dumps({"model": chosen.describe, "out": str(destination),
                          **record.model_dump(mode="json")}, indent=2))
    else:
        print(f"{chosen.describe}: {len(record.results)} eval(s)")
        print("\n".join(table(record, result_label="model")))
        print(f"  per-row results and results.json in {destination}")
    return ExitCode.INVALID if record.passed is False else ExitCode.OK


def _target(target: str, base: str | None, root: Path) -> Target:
    from runner.execute import loading
    from runner.plan.source import identity, locate
    from runner.runs import find_run
    from runner.spec.fields import HUB_ID_PATTERN, ModelSource

    path = Path(target)
    if path.is_dir() and (path / "config.json").is_file() or (
            not path.exists() and target.count("/") == 1 and HUB_ID_PATTERN.match(target)):
        source = ModelSource(path=str(path.resolve())) if path.exists() else ModelSource(hub=target)
        location = locate(source, Path.cwd(), root)
        base_location = locate(_model_source(base), Path.cwd(), root) if base else None
        return Target(location.describe(), lambda: _load(location),
                      identity(base_location) if base_location else None,
                      (lambda: _load(base_location)) if base_location else None)
    found = find_run(target, root, succeeded=False)
    from runner.rundir import RunDirectory

    run = RunDirectory(found.path)
    manifest = run.read_manifest()
    if manifest is None:
        raise RunnerError(f"{found.path}: the run's manifest.json cannot be read")
    if not (run.model.is_dir() or run.adapter.is_dir()):
        raise RunnerError(f"run {run.run_id} ({manifest.state}) has no saved model",
                          "evaluate a run that finished training (runner runs lists them), or a model folder")
    if base is not None:
        raise UsageError("--base applies to a model folder or hub id; a run is compared with its own base")
    plan = manifest.plan
    location = loading.location_of(plan)
    from runner.methods import registry

    descriptor = registry.get(plan.method)
    if not descriptor.generates:
        raise RunnerError(f"a {plan.method} model scores text; evals ask a model for answers")

    def load_base():
        where = loading.base_location(plan)
        tokenizer = loading.load_tokenizer(where)
        return loading.load_model(where, descriptor.head, _dtype(), pad_token_id=tokenizer.pad_token_id).to(
            _device()), tokenizer

    def load_run():
        model, tokenizer = loading.load_result(run, plan)
        return model.to(_device()), tokenizer

    return Target(f"run {run.path}", load_run, plan.inputs.base_model, load_base, plan, run.path / "evals")


def _model_source(text: str):
    from runner.spec.fields import ModelSource

    return ModelSource(path=str(Path(text).resolve())) if Path(text).exists() else ModelSource(hub=text)


def _load(location):
    from runner.execute import loading
    from runner.methods.registry import CAUSAL_LM

    tokenizer = loading.load_tokenizer(location)
    model = loading.load_model(location, CAUSAL_LM, _dtype(), pad_token_id=tokenizer.pad_token_id)
    return model.to(_device()), tokenizer


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def _evals(chosen: Target, evals_file: str | None):
    """(the evals, the folder their paths resolve in, the chat-template choice or None for auto)."""
    if evals_file is not None:
        from runner.spec.check import check_evals_file

        evals, diagnostics = check_evals_file(Path(evals_file))
        for diagnostic in diagnostics:
            print(diagnostic.format_text(), file=sys.stderr)
        if evals is None:
            raise RunnerError(f"{evals_file} is not a valid evals file", "fix the errors above")
        if not evals.any():
            raise RunnerError(f"{evals_file} names no sets or tasks")
        chat = None if evals.generation.chat_template == "auto" else evals.generation.chat_template
        return evals, Path(evals_file).resolve().parent, chat
    if chosen.plan is None or chosen.plan.evals is None:
        raise UsageError("no evals to run: this " + ("run's spec has none" if chosen.plan else "is a model"),
                         "give an evals file: runner eval TARGET --evals evals.yaml")
    from runner.evals.stage import evals_spec

    return evals_spec(chosen.plan.spec), chosen.plan.inputs.spec_folder, chosen.plan.evals.chat_template
