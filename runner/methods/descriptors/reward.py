"""reward: a reward model, the base with a scalar head trained so chosen answers score above rejected ones."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods.registry import PAIRS, SCORE, MemoryTerms, MethodDescriptor
from runner.spec.fields import Section


class RewardSection(Section):
    center_rewards_coefficient: Annotated[float, Field(ge=0)] | None = None
    """Penalty pulling rewards towards zero mean; null turns it off."""


def memory(section: RewardSection, mode: str) -> MemoryTerms:
    return MemoryTerms(sequences_per_row=2, logits=False)


DESCRIPTOR = MethodDescriptor(
    name="reward",
    summary="a reward model (a scalar head) on preference pairs",
    section=RewardSection,
    formats=("preference",),
    rows=PAIRS,
    example_row={"prompt": "What is your name?", "chosen": "Chatty.", "rejected": "I have no name."},
    objective="Bradley-Terry: -log sigmoid(score(chosen) - score(rejected))",
    mask_rule="one score per sequence, read at its last token; chosen must score above rejected{wrapped}",
    learning_rates={"full": 1e-5, "freeze": 5e-5, "lora": 1e-4},
    training_path="TRL RewardTrainer",
    recipe="runner.methods.reward",
    head=SCORE,
    new_heads=("score.weight",),
    memory=memory,
    dropout=False,
    generates=False,
)
