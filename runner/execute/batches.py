"""Micro-batches for causal-LM training: padded rows, or rows packed into blocks.

Packing puts whole rows (never split) into blocks of at most `max_length` tokens, and keeps
documents apart: position ids restart at 0 for each document (transformers then builds a
block-diagonal causal mask, as long as the forward gets no attention mask and builds no
cache), and the first token of each document gets no label, so no token is predicted
from another document. One step's rows are packed together, so packing changes how a
step is computed, never which rows it trains on or the loss it computes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from runner.encoding.packing import pack

IGNORE = -100


@dataclass
class Micro:
    """One forward pass."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    tokens: int
    """Real (non-pad) tokens."""
    targets: int
    """Tokens the loss covers (labels after the causal shift)."""

    def to(self, device) -> Micro:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return tensor.to(device, non_blocking=True) if tensor is not None else None

        return Micro(move(self.input_ids), move(self.labels), move(self.position_ids), move(self.attention_mask),
                     self.tokens, self.targets)


def step_micro_batches(examples: list[dict], *, micro: int, packing: bool, max_length: int, pad_id: int,
                       rank: int = 0, world: int = 1) -> tuple[list[Micro], int, int]:
    """This rank's micro-batches for one optimizer step over `examples`, and the step's targets and
    real tokens on all ranks (the loss is a sum over tokens divided by the targets: the per-token mean
    of the step).

    Every rank computes the same layout and takes its share, so no communication is needed and
    all ranks run the same number of micro-batches (DDP needs that)."""
    if packing:
        groups = pack([len(e["input_ids"]) for e in examples], max_length)
        rows = [_packed_row([examples[i] for i in group], max_length) for group in groups]
    else:
        rows = [_single_row(e, max_length) for e in examples]
    total_targets = sum(_targets(labels) for _, labels, _ in rows)
    total_tokens = sum(len(ids) for ids, _, _ in rows)
    per_rank = math.ceil(len(rows) / world)
    count = math.ceil(per_rank / micro)
    mine = rows[rank * per_rank:(rank + 1) * per_rank]
    micros = [_collate(mine[i * micro:(i + 1) * micro], packing, pad_id) for i in range(count)]
    return micros, total_targets, total_tokens


def _single_row(example: dict, max_length: int):
    ids, labels = example["input_ids"][:max_length], example["labels"][:max_length]
    return ids, labels, None


def _packed_row(examples: list[dict], max_length: int):
    ids, labels, positions = [], [], []
    for example in examples:
        piece, piece_labels = example["input_ids"][:max_length], example["labels"][:max_length]
        ids += piece
        labels += [IGNORE] + piece_labels[1:]  # nothing is predicted across a document boundary
        positions += range(len(piece))
    return ids, labels, positions


def _targets(labels: list[int]) -> int:
    return sum(1 for label in labels[1:] if label != IGNORE)


def _collate(rows, packing: bool, pad_id: int) -> Micro:
    if not rows:  # this rank has fewer rows than the others this step: an empty pass keeps DDP in step
        empty = torch.full((1, 2), pad_id, dtype=torch.long)
        return Micro(empty, torch.full_like(empty, IGNORE), torch.zeros_like(empty) if packing else None,
                     None if packing else torch.zeros_like(empty), 0, 0)
    width = max(len(ids) for ids, _, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long) if packing else None
    attention = None if packing else torch.zeros((len(rows), width), dtype=torch.long)
    for row, (row_ids, row_labels, row_positions) in enumerate(rows):
        length = len(row_ids)
        ids[row, :length] = torch.tensor(row_ids)
        labels[row, :length] = torch.tensor(row_labels)
        if packing:
            positions[row, :length] = torch.tensor(row_positions)
        else:
            attention[row, :length] = 1
    tokens = sum(len(row_ids) for row_ids, _, _ in rows)
    return Micro(ids, labels, positions, attention, tokens, sum(_targets(r) for _, r, _ in rows))


def shuffled_forever(count: int, seed: int, skip: int = 0) -> Iterator[int]:
    """Row indices in a seeded shuffle per pass over the data, endlessly; `skip` drops the first
    indices, so a resumed run continues exactly where the interrupted one stopped."""
    generator = random.Random(seed)

    def endless():
        while True:
            indices = list(range(count))
            generator.shuffle(indices)
            yield from indices

    order = endless()
    for _ in range(skip):
        next(order)
    return order
