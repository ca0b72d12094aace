"""kto: Kahneman-Tversky optimisation on single answers labelled desirable or not, against a reference."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods.registry import UNPAIRED, MemoryTerms, MethodDescriptor, unless_lora
from runner.spec.fields import Section


class KtoSection(Section):
    beta: Annotated[float, Field(gt=0)] = 0.1
    """Strength of the pull towards the reference model."""
    desirable_weight: Annotated[float, Field(gt=0)] = 1.0
    """Weight of the loss on desirable rows; raise it when they are fewer than the undesirable ones."""
    undesirable_weight: Annotated[float, Field(gt=0)] = 1.0
    """Weight of the loss on undesirable rows."""


def memory(section: KtoSection, mode: str) -> MemoryTerms:
    # The KL baseline's mismatched answers run without gradients, as does the reference: one sequence a row.
    return MemoryTerms(models=unless_lora(mode))


DESCRIPTOR = MethodDescriptor(
    name="kto",
    summary="single answers labelled desirable or not (no pairs needed), against a frozen reference model",
    section=KtoSection,
    formats=("unpaired",),
    rows=UNPAIRED,
    example_row={"prompt": "What is your name?", "completion": "Chatty.", "label": True},
    objective="KTO: 1 - sigmoid(beta x (log-ratio - KL)) for desirable answers, 1 - sigmoid(beta x (KL - log-ratio)) "
              "for undesirable ones, log-ratios against the reference, KL estimated from mismatched answers of the "
              "micro-batch",
    mask_rule="the answer after the prompt (log-probability ratio against the reference){wrapped}",
    learning_rates={"full": 5e-7, "freeze": 5e-6, "lora": 5e-6},
    training_path="TRL KTOTrainer",
    recipe="runner.methods.kto",
    memory=memory,
    dropout=False,
    min_micro_batch=2,
)
