"""Save the final model (adapter, merged, or full) with its tokenizer, atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runner.plan.models import Plan
from runner.rundir import RunDirectory


def save_final(model, tokenizer, plan: Plan, run: RunDirectory) -> Path:
    form = plan.value("outputs.save")
    target = run.adapter if form == "adapter" else run.model
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    if form == "merged":
        model = model.merge_and_unload()
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if form == "adapter":
        base = plan.inputs.base_model.model_dump(mode="json")
        (staging / "runner_base_model.json").write_text(json.dumps(base, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
