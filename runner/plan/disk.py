"""Disk a run takes: the final model, the checkpoints while it runs, and a GGUF's fp32 copy. No torch.

A checkpoint holds what resuming needs: runner's own loops (SFT, PPO) write the trained tensors and
their two AdamW states (12 bytes a trained parameter); a TRL trainer writes the model it trains (the
adapter under LoRA, else every weight) and the AdamW states. While a new checkpoint is written the
previous ones are still there: up to keep_checkpoints + 1 at once. Once the run has succeeded they
are deleted, unless outputs.keep_checkpoints_after_success says otherwise.
"""

from __future__ import annotations

from runner.plan.memory import Workload
from runner.plan.models import DiskEstimate, DiskItem, ModelFacts, ModelIdentity, Steps

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "chat_template.jinja")


def estimate(facts: ModelFacts, work: Workload, steps: Steps, keep: int, keep_after_success: bool,
             model: ModelIdentity) -> DiskEstimate:
    tokenizer = sum(file.size for file in model.files if file.path.rsplit("/", 1)[-1] in TOKENIZER_FILES)
    final = work.saved_parameters * work.saved_bytes_each + tokenizer
    written = steps.total_steps // max(steps.checkpoint_every, 1)
    at_once = min(keep + 1, written)
    one = _checkpoint_bytes(facts, work)
    items = [DiskItem(name="final model", bytes=final, note=f"{work.saved_parameters / 1e6:.1f}M parameters x "
                      f"{work.saved_bytes_each} B, and the tokenizer")]
    if at_once:
        kept_count = min(keep, written) if keep_after_success else 0
        items.append(DiskItem(
            name="checkpoints", bytes=at_once * one, kept=bool(kept_count),
            note=f"{written} written, up to {at_once} at once of {one / 2**20:,.0f} MiB each; "
                 + (f"the newest {kept_count} kept after success" if kept_count else "deleted once the run succeeds")))
    if work.gguf_conversion:
        items.append(DiskItem(name="GGUF dequantised", bytes=facts.total_parameters * 4,
                              note="the GGUF file's fp32 copy in runner's cache, made once"))
    kept = sum(item.bytes for item in items if item.kept)
    if at_once and items[1].kept:
        kept -= (at_once - min(keep, written)) * one
    return DiskEstimate(items=items, peak_bytes=sum(item.bytes for item in items), kept_bytes=kept)


def _checkpoint_bytes(facts: ModelFacts, work: Workload) -> int:
    states = work.trainable_parameters * 8
    if not work.trl:
        return work.trainable_parameters * 4 + states
    weights = work.trainable_parameters if work.mode == "lora" else facts.total_parameters
    return weights * 4 + states
