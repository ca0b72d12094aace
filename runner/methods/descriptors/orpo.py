"""orpo: odds-ratio preference optimisation; supervised on the chosen answer, no reference model."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods.registry import PAIRS, MemoryTerms, MethodDescriptor
from runner.spec.fields import Section


class OrpoSection(Section):
    beta: Annotated[float, Field(gt=0)] = 0.1
    """Weight of the odds-ratio term against the chosen answer's cross-entropy (lambda in the paper)."""


def memory(section: OrpoSection, mode: str) -> MemoryTerms:
    return MemoryTerms(sequences_per_row=2)


DESCRIPTOR = MethodDescriptor(
    name="orpo",
    summary="preference pairs in one stage (supervised on chosen, odds ratio over rejected), no reference model",
    section=OrpoSection,
    formats=("preference",),
    rows=PAIRS,
    example_row={"prompt": "What is your name?", "chosen": "Chatty.", "rejected": "I have no name."},
    objective="ORPO: cross-entropy of the chosen answer - beta x log sigmoid(log odds(chosen) - log odds(rejected)), "
              "odds from the mean token log-probability; no reference model",
    mask_rule="chosen and rejected answers after the prompt (cross-entropy on chosen, odds ratio on both){wrapped}",
    learning_rates={"full": 8e-6, "freeze": 2e-5, "lora": 5e-5},
    training_path="TRL ORPOTrainer (trl.experimental.orpo)",
    recipe="runner.methods.orpo",
    memory=memory,
    dropout=False,
)
