"""Save the final model (adapter, merged, or full) with its tokenizer, atomically.

What is saved names the spec's model, never a path of this machine's cache: an adapter's
`base_model_name_or_path` is the hub id (or the folder as the spec writes it), so plain PEFT loads it
wherever that model is. Files get the usual umask-derived mode.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runner.fsutil import give_usual_modes
from runner.plan.models import ModelIdentity, Plan
from runner.rundir import RunDirectory


def save_final(model, tokenizer, plan: Plan, run: RunDirectory, into: Path | None = None) -> Path:
    """The model as outputs.save says, into the run's model/ (or adapter/) folder; `into` another folder (the
    best model while training: a LoRA model is saved as its adapter there, never folded while it trains)."""
    form = plan.value("outputs.save")
    if into is not None and form == "merged":
        form = "adapter"
    target = into or (run.adapter if form == "adapter" else run.model)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    if form == "merged":
        model = model.merge_and_unload()
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if form == "adapter":
        base = plan.inputs.base_model
        _set_json(staging / "adapter_config.json", base_model_name_or_path=portable_name(base))
        (staging / "runner_base_model.json").write_text(json.dumps(base.model_dump(mode="json"), indent=2) + "\n")
    give_usual_modes(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def portable_name(base: ModelIdentity) -> str:
    """How the base model is named for others: the hub id, or the path as the spec writes it; the
    model folder of the run a {job: NAME} reference used."""
    if base.kind == "job":
        return str(Path(base.job_run) / "model")
    return base.reference


def _set_json(path: Path, **values) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(values)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
