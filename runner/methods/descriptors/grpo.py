"""grpo: TRL's GRPOTrainer; each completion is scored against the others sampled for its prompt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from pydantic import Field

from runner.methods.registry import PROMPTS, REFERENCE, REWARD, Batching, Finding, MemoryTerms, MethodDescriptor
from runner.spec.fields import Count, RewardSource, Section


class GrpoSection(Section):
    reward: RewardSource
    """Where scores come from."""
    num_generations: Annotated[int, Field(ge=2)] = 8
    """Completions per prompt; advantages are relative within the group."""
    max_completion_length: Count = 256
    """Tokens generated per completion at most."""
    temperature: Annotated[float, Field(gt=0)] = 1.0
    """Sampling temperature."""
    beta: Annotated[float, Field(ge=0)] = 0.0
    """KL weight towards the reference; 0 loads no reference model."""
    epsilon: Annotated[float, Field(gt=0)] = 0.2
    """Clip range of the policy ratio."""


def memory(section: GrpoSection, mode: str) -> MemoryTerms:
    models = (REFERENCE,) if section.beta > 0 and mode != "lora" else ()
    if section.reward.model is not None:
        models += (REWARD,)
    return MemoryTerms(generated_tokens=section.max_completion_length, models=models)


def whole_groups(section: GrpoSection, batching: Batching) -> Iterator[Finding]:
    if batching.batch != "auto" and batching.batch % section.num_generations:
        yield Finding(("grpo", "num_generations"),
                      f"num_generations {section.num_generations} does not divide batch_size {batching.batch}",
                      "a batch holds whole groups of completions of one prompt")


DESCRIPTOR = MethodDescriptor(
    name="grpo",
    summary="reinforcement learning, each completion scored against its group (TRL GRPO)",
    section=GrpoSection,
    formats=("prompt_only", "prompt_completion", "messages", "preference"),
    rows=PROMPTS,
    example_row={"prompt": "What is your name?"},
    objective="GRPO: each completion's reward relative to the others of its prompt (no value model); clipped policy "
              "ratio, plus beta x KL to the reference when beta > 0",
    mask_rule="generated tokens only; the prompt is context{wrapped}",
    learning_rates={"full": 1e-6, "freeze": 5e-6, "lora": 1e-5},
    training_path="TRL GRPOTrainer",
    recipe="runner.methods.grpo",
    memory=memory,
    checks=(whole_groups,),
    completions_per_prompt=lambda section: section.num_generations,
    section_hint="add  grpo: {reward: {model: {job: my-reward-model}}}  or  {reward: {function: my_module:score}}",
)
