"""A finished LoRA run's model merged into a plain transformers folder (`runner export`); loaded as it
was trained, for `runner sample`, by runner.execute.loading.load_result.

A LoRA run saves its adapter. Merged, the adapter is folded into the base's weights: the result loads
with `AutoModelForCausalLM.from_pretrained` alone. For a quantized base the adapter was trained on the
4-bit (or 8-bit) weights, not on the original ones, so it is merged into the base *dequantised*: each
weight as the run's forward pass saw it, in the compute dtype. 4-bit weights dequantise exactly; 8-bit
LLM.int8 also quantises each product's input, so an 8-bit model's merged logits differ a little more.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.execute import card, loading
from runner.fsutil import give_usual_modes
from runner.manifest import Manifest
from runner.methods import registry
from runner.plan.models import Plan
from runner.rundir import RunDirectory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def merged(run: RunDirectory, plan: Plan):
    """The run's adapter folded into its base, on the CPU: a plain transformers model in the dtype the base
    computed in. A quantized base is dequantised first (its weights as the run computed with them), so
    nothing is quantized twice."""
    from peft import PeftModel

    quantized = plan.trainable.quantized
    dtype = DTYPES[quantized.compute_dtype] if quantized else loading.weights_dtype(plan)
    base = loading.load_model(loading.base_location(plan), registry.get(plan.method).head, dtype, quantized=quantized,
                              device="cpu")
    if quantized is not None:
        base.dequantize()
    return PeftModel.from_pretrained(base, run.adapter).merge_and_unload().to(dtype)


def merge_note(plan: Plan) -> str:
    quantized = plan.trainable.quantized
    if quantized is None:
        return "The LoRA adapter is merged into the base weights."
    return (f"The LoRA adapter was trained on a base stored {quantized.storage().describe()}; it is merged into "
            f"that base dequantised to {quantized.compute_dtype} (the weights the run computed with), not into "
            "the original weights.")


def export(run: RunDirectory, manifest: Manifest, target: Path) -> Path:
    """Write the run's adapter merged into its base, with the tokenizer and a model card, to `target`
    (atomically: a staging folder renamed into place)."""
    plan = manifest.plan
    if plan.trainable.mode != "lora":
        raise RunnerError(f"run {run.run_id} trained {plan.trainable.mode}: its model folder {run.model} is already a "
                          "plain transformers model", "load it with from_pretrained, or copy it")
    if not run.adapter.is_dir():
        raise RunnerError(f"run {run.run_id} has no adapter folder ({run.adapter}); it saved "
                          f"{plan.value('outputs.save')}", "a merged run's model folder is already merged")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    adapter = loading.ModelLocation("local", str(run.adapter), run.adapter)
    model, tokenizer = merged(run, plan), loading.load_tokenizer(adapter)  # the tokenizer the run saved
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    card.write_card(staging, manifest, note=merge_note(plan) + f" Exported from run `{run.path}`.")
    give_usual_modes(staging)
    staging.rename(target)
    return target
