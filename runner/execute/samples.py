"""Before/after answers: the same prompts, greedy decoding, base model then trained model."""

from __future__ import annotations

import torch

MAX_NEW_TOKENS = 48


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, templated: bool, max_new_tokens: int = MAX_NEW_TOKENS,
             batch: int = 1):
    """Greedy answers; `templated` prompts already hold their special tokens (chat template). `batch` prompts
    share each forward pass (left-padded): many answers come several times faster, equal to the one-by-one
    answers up to floating-point rounding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(prompts), batch):
        inputs = tokenizer(prompts[start:start + batch], return_tensors="pt", padding=True, padding_side="left",
                           add_special_tokens=not templated).to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        answers += [tokenizer.decode(row[inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
                    for row in output]
    model.train(was_training)
    _reshard(model)
    return answers


def _reshard(model) -> None:
    """FSDP keeps the root's parameters gathered after a forward pass without backward; give them
    back to their shards, as training and the fingerprints expect."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
