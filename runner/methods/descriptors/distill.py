"""distill: knowledge distillation from a teacher model, on the data's answers, the student's own, or a mix
(TRL's GKD trainer)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods.registry import SUPERVISED, TEACHER, MemoryTerms, MethodDescriptor, Option, options_of
from runner.spec.fields import Count, ModelSource, Section

GKD = "GKD (Agarwal et al. 2024, arXiv:2306.13649)"


class DistillSection(Section):
    teacher: ModelSource
    """The model to learn from: a hub id, a local path, a .gguf file, or {job: other-spec}. It must share the
    student's vocabulary."""
    on_policy: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of the steps trained on the student's own completions, which the teacher scores token by token:
    0 trains on the data's answers only (off-policy), 1 on the student's only (on-policy)."""
    beta: Annotated[float, Field(ge=0, le=1)] = 0.5
    """The divergence between the teacher's and the student's next-token distributions: 0 forward KL (the
    student covers all the teacher says), 1 reverse KL (it seeks the teacher's likeliest tokens), 0.5
    Jensen-Shannon."""
    temperature: Annotated[float, Field(gt=0)] = 0.9
    """Sampling temperature of the student's completions."""
    max_completion_length: Count = 128
    """Tokens the student generates per prompt at most, on on-policy steps."""


def memory(section: DistillSection, mode: str) -> MemoryTerms:
    return MemoryTerms(generated_tokens=section.max_completion_length if section.on_policy > 0 else 0,
                       models=(TEACHER,))


def options(section: DistillSection) -> list[Option]:
    return options_of(section, {
        "on_policy": f"{GKD}: lambda, the share of student-generated completions",
        "beta": f"{GKD}: the generalised Jensen-Shannon divergence's interpolation",
        "temperature": f"{GKD}: 0.9 is TRL's default",
    })


DESCRIPTOR = MethodDescriptor(
    name="distill",
    summary="knowledge distillation from a teacher model, on the data's answers or the student's own (TRL GKD)",
    section=DistillSection,
    formats=("messages", "prompt_completion"),
    rows=SUPERVISED,
    example_row={"prompt": "What is your name?", "completion": "Chatty."},
    objective="GKD: the generalised Jensen-Shannon divergence (beta) between the teacher's and the student's "
              "next-token distributions over the answer's tokens: the data's answer, or on a share on_policy of the "
              "steps the student's own completion",
    mask_rule={
        "messages": "assistant turns (the data's) or the student's completion; everything before the first "
                    "assistant turn is the prompt{wrapped}",
        "prompt_completion": "the completion (the data's or the student's); the prompt is context{wrapped}",
    },
    learning_rates={"full": 2e-5, "freeze": 1e-4, "lora": 2e-4},
    training_path="TRL GKDTrainer (trl.experimental.gkd)",
    recipe="runner.methods.distill",
    memory=memory,
    dropout=False,
    section_hint="add  distill: {teacher: {job: my-teacher}}  (or a hub id, or a local path)",
    options=options,
)
