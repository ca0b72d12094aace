"""Whether to pack SFT rows into blocks: how much of a padded batch would be real tokens, how
much of a packed one, and whether this model keeps packed documents apart (checked, not assumed)."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

OPEN_BLOCKS = 64
"""Open blocks searched for room (first fit); older ones are closed."""
WORTH_IT = 0.10
"""Pack when packed blocks hold at least this share more real tokens than padded batches."""


def pack(lengths: list[int], max_length: int) -> list[list[int]]:
    """Row indices per block, first fit in the given order (rows longer than max_length are truncated)."""
    blocks: list[list[int]] = []
    room: list[int] = []
    for index, length in enumerate(lengths):
        length = min(length, max_length)
        start = max(0, len(blocks) - OPEN_BLOCKS)
        target = next((b for b in range(start, len(blocks)) if room[b] >= length), None)
        if target is None:
            blocks.append([])
            room.append(max_length)
            target = len(blocks) - 1
        blocks[target].append(index)
        room[target] -= length
    return blocks


@dataclass(frozen=True)
class Layouts:
    padded: float
    """Share of real tokens in padded micro-batches (each padded to its longest row)."""
    packed: float
    """Share of real tokens in packed blocks (each as wide as its fullest)."""
    blocks_per_step: float
    """Blocks one optimizer step needs, on average."""


def layouts(lengths: list[int], batch: int, micro: int, max_length: int, seed: int = 0) -> Layouts:
    lengths = [min(n, max_length) for n in lengths if n]
    order = lengths[:]
    random.Random(seed).shuffle(order)
    steps = [order[start:start + batch] for start in range(0, len(order), batch)] or [[1]]
    real = sum(order) or 1
    padded = sum(max(step[i:i + micro]) * len(step[i:i + micro]) for step in steps for i in range(0, len(step), micro))
    blocks = [[sum(step[i] for i in block) for block in pack(step, max_length)] for step in steps]
    packed = sum(max(sizes) * len(sizes) for sizes in blocks)
    return Layouts(real / padded, real / packed, sum(len(sizes) for sizes in blocks) / len(steps))


def keeps_documents_apart(config) -> bool:
    """Run a one-block copy of the model on two documents, packed and apart: equal logits mean the
    attention isolates documents from restarting position ids (with no attention mask and no cache)."""
    import torch

    from runner.methods.registry import CAUSAL_LM
    from runner.model.skeleton import model_class

    small = copy.deepcopy(config)
    text = small.get_text_config() if hasattr(small, "get_text_config") else small
    text.num_hidden_layers, text.vocab_size = 1, 64
    for name in ("layer_types", "sliding_window"):
        if isinstance(getattr(text, name, None), list):
            setattr(text, name, getattr(text, name)[:1])
    try:
        torch.manual_seed(0)
        model = model_class(CAUSAL_LM).from_config(small).eval()
        first, second = torch.randint(0, 64, (1, 5)), torch.randint(0, 64, (1, 7))
        with torch.no_grad():
            apart = torch.cat([model(first, use_cache=False).logits, model(second, use_cache=False).logits], dim=1)
            positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0)
            packed = model(torch.cat([first, second], dim=1), position_ids=positions, use_cache=False).logits
        return bool(torch.allclose(apart, packed, atol=1e-4))
    except Exception:  # an architecture this check cannot build: do not pack it
        return False
