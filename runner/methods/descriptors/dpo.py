"""dpo: direct preference optimisation on chosen/rejected pairs, against a frozen reference."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from runner.methods.registry import PAIRS, MemoryTerms, MethodDescriptor, unless_lora
from runner.spec.fields import Section


class DpoSection(Section):
    beta: Annotated[float, Field(gt=0)] = 0.1
    """Strength of the pull towards the reference model."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """DPO loss variant."""
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    """Assumed share of mislabelled pairs (robust/cDPO)."""


def memory(section: DpoSection, mode: str) -> MemoryTerms:
    return MemoryTerms(sequences_per_row=2, models=unless_lora(mode))


DESCRIPTOR = MethodDescriptor(
    name="dpo",
    summary="preference pairs, against a frozen reference model",
    section=DpoSection,
    formats=("preference",),
    rows=PAIRS,
    example_row={"prompt": "What is your name?", "chosen": "Chatty.", "rejected": "I have no name."},
    objective="DPO: -log sigmoid(beta x (chosen log-ratio - rejected log-ratio)), each log-ratio taken against the "
              "reference (the base; under LoRA the base with the adapter switched off)",
    mask_rule="chosen and rejected answers after the prompt (log-probability ratio against the reference){wrapped}",
    learning_rates={"full": 5e-7, "freeze": 5e-6, "lora": 5e-6},
    training_path="TRL DPOTrainer",
    recipe="runner.methods.dpo",
    memory=memory,
    dropout=False,
)
