"""simpo: simple preference optimisation, a length-normalised margin with no reference model (TRL's CPO
trainer with its SimPO loss)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods.registry import PAIRS, MemoryTerms, MethodDescriptor
from runner.spec.fields import Section


class SimpoSection(Section):
    beta: Annotated[float, Field(gt=0)] = 2.0
    """Scale of the reward, the mean token log-probability of an answer (the paper uses 2 to 2.5)."""
    gamma: Annotated[float, Field(ge=0)] = 1.0
    """Target reward margin: chosen must beat rejected by this much before the loss lets go."""
    cpo_alpha: Annotated[float, Field(ge=0)] = 0.0
    """Weight of a cross-entropy term on the chosen answer (CPO-SimPO); 0 is plain SimPO."""


def memory(section: SimpoSection, mode: str) -> MemoryTerms:
    return MemoryTerms(sequences_per_row=2)


DESCRIPTOR = MethodDescriptor(
    name="simpo",
    summary="preference pairs, a length-normalised reward margin, no reference model",
    section=SimpoSection,
    formats=("preference",),
    rows=PAIRS,
    example_row={"prompt": "What is your name?", "chosen": "Chatty.", "rejected": "I have no name."},
    objective="SimPO: -log sigmoid(beta x (mean log-prob of chosen - mean log-prob of rejected) - gamma), "
              "+ cpo_alpha x cross-entropy of chosen; no reference model",
    mask_rule="chosen and rejected answers after the prompt (mean log-probability of each){wrapped}",
    learning_rates={"full": 5e-7, "freeze": 5e-6, "lora": 5e-6},
    training_path="TRL CPOTrainer with loss_type simpo (trl.experimental.cpo)",
    recipe="runner.methods.simpo",
    memory=memory,
    dropout=False,
)
