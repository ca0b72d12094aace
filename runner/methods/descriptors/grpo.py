"""grpo: TRL's GRPOTrainer; each completion is scored against the others sampled for its prompt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from runner.methods import rl_options
from runner.methods.registry import PROMPTS, Batching, Finding, MethodDescriptor, Option, options_of
from runner.rewards.spec import DeclaredReward
from runner.spec.fields import Count, Section


class GrpoSection(Section):
    reward: DeclaredReward
    """What a completion scores: a list of weighted terms, each a declared check (exact, numeric, regex,
    contains, json, format, length), a reward model ({model: ...}) or a Python function ({function:
    module:name}). One term may be written without the list."""
    num_generations: Annotated[int, Field(ge=2)] = 8
    """Completions per prompt (the group); advantages are relative within the group."""
    max_completion_length: Count = 256
    """Tokens generated per completion at most."""
    temperature: Annotated[float, Field(gt=0)] = 1.0
    """Sampling temperature."""
    loss: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    """How token losses are averaged: dapo, over every token of the batch; grpo, per completion and then
    over completions (favours short right answers and long wrong ones); dr_grpo, over a constant (completions
    x max_completion_length); bnpo, over the tokens of each micro-batch."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages are rewards minus their group's mean, divided by the standard deviation of the group, of the
    batch, or not divided."""
    beta: Annotated[float, Field(ge=0)] = 0.0
    """KL weight towards the reference model; 0 loads no reference model."""
    num_iterations: Count = 1
    """Passes over each batch of completions. With 1 the policy that trains is the one that sampled, so the
    ratio is 1 and epsilon, epsilon_high and importance_sampling have no effect."""
    epsilon: Annotated[float, Field(gt=0)] = 0.2
    """Clip range of the policy ratio: [1 - epsilon, 1 + epsilon] (upper bound: epsilon_high when given)."""
    epsilon_high: Annotated[float, Field(gt=0)] | None = None
    """Upper clip range, above epsilon to let unlikely tokens rise (clip-higher); default: epsilon."""
    importance_sampling: Literal["token", "sequence"] = "token"
    """token: one policy ratio per token; sequence: one per completion, from the mean of its tokens'
    log-ratios (GSPO; with loss: grpo)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss: a cut answer is not a wrong one."""


LOSSES = {
    "grpo": f"{rl_options.GRPO}: each completion's token mean, then the mean over completions",
    "dapo": f"{rl_options.DAPO}: the mean over every token of the batch (TRL's default)",
    "dr_grpo": f"{rl_options.DR_GRPO}: the sum over tokens / (completions x max_completion_length)",
    "bnpo": f"{rl_options.BNPO}: the mean over the tokens of each micro-batch",
}


def sequence_sampling_needs_its_loss(section: GrpoSection, batching: Batching) -> Iterator[Finding]:
    if section.importance_sampling == "sequence" and section.loss != "grpo":
        yield Finding(("grpo", "importance_sampling"),
                      f"sequence-level importance sampling (GSPO) with loss {section.loss} sums token losses, which "
                      "weighs each completion by its length instead of optimising GSPO's per-completion objective",
                      "set loss: grpo, as the GSPO paper does")


def options(section: GrpoSection) -> list[Option]:
    return options_of(section, {
        "num_generations": f"{rl_options.GRPO}: the group size G",
        "loss": LOSSES[section.loss],
        "scale_rewards": rl_options.SCALINGS[section.scale_rewards],
        "beta": f"{rl_options.GRPO}: KL to the reference (0.04 there); 0 as in DAPO and Dr. GRPO",
        **rl_options.clipping_origins(section),
        "importance_sampling": rl_options.SAMPLING[section.importance_sampling],
    })


DESCRIPTOR = MethodDescriptor(
    name="grpo",
    summary="reinforcement learning, each completion scored against its group (TRL GRPO)",
    section=GrpoSection,
    formats=("prompt_only", "prompt_completion", "messages", "preference"),
    rows=PROMPTS,
    example_row={"prompt": "What is 2 + 3?"},
    objective="GRPO: each completion's reward relative to the others of its prompt (no value model); clipped policy "
              "ratio, plus beta x KL to the reference when beta > 0",
    mask_rule="generated tokens only; the prompt is context{wrapped}",
    learning_rates={"full": 1e-6, "freeze": 5e-6, "lora": 1e-5},
    training_path="TRL GRPOTrainer",
    recipe="runner.methods.grpo",
    memory=rl_options.memory,
    checks=(rl_options.whole_groups, rl_options.clipping_acts, sequence_sampling_needs_its_loss),
    completions_per_prompt=lambda section: section.num_generations,
    section_hint="add  grpo: {reward: [{numeric: {column: answer}}]}  (declared checks), or a reward model "
                 "{model: {job: my-reward-model}}, or a function {function: my_module:score}",
    options=options,
)
