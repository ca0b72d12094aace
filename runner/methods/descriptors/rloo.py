"""rloo: TRL's RLOOTrainer; each completion's baseline is the mean reward of the other completions of its
prompt (REINFORCE leave-one-out)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from runner.methods import rl_options
from runner.methods.registry import PROMPTS, MethodDescriptor, Option, options_of
from runner.rewards.spec import DeclaredReward
from runner.spec.fields import Count, Section


class RlooSection(Section):
    reward: DeclaredReward
    """What a completion scores: a list of weighted terms, each a declared check (exact, numeric, regex,
    contains, json, format, length), a reward model ({model: ...}) or a Python function ({function:
    module:name}). One term may be written without the list."""
    num_generations: Annotated[int, Field(ge=2)] = 2
    """Completions per prompt; each one's baseline is the mean reward of the others."""
    max_completion_length: Count = 256
    """Tokens generated per completion at most."""
    temperature: Annotated[float, Field(gt=0)] = 1.0
    """Sampling temperature."""
    beta: Annotated[float, Field(ge=0)] = 0.05
    """Weight of the KL to the reference model, subtracted from each completion's reward; 0 loads no
    reference model."""
    normalize_advantages: bool = False
    """Scale the advantages of each batch to mean 0 and standard deviation 1."""
    num_iterations: Count = 1
    """Passes over each batch of completions. With 1 the policy that trains is the one that sampled, so the
    ratio is 1 and epsilon and epsilon_high have no effect."""
    epsilon: Annotated[float, Field(gt=0)] = 0.2
    """Clip range of the policy ratio: [1 - epsilon, 1 + epsilon] (upper bound: epsilon_high when given)."""
    epsilon_high: Annotated[float, Field(gt=0)] | None = None
    """Upper clip range, above epsilon to let unlikely tokens rise (clip-higher); default: epsilon."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss: a cut answer is not a wrong one."""


def options(section: RlooSection) -> list[Option]:
    return options_of(section, {
        "num_generations": f"{rl_options.RLOO}: k samples per prompt (2 to 4 there)",
        "beta": f"{rl_options.RLOO}: the KL penalty in the reward",
        "normalize_advantages": f"{rl_options.RLOO}: off; on is a common variance reduction",
        **rl_options.clipping_origins(section),
    })


DESCRIPTOR = MethodDescriptor(
    name="rloo",
    summary="reinforcement learning, each completion's baseline the mean of the others of its prompt (TRL RLOO)",
    section=RlooSection,
    formats=("prompt_only", "prompt_completion", "messages", "preference"),
    rows=PROMPTS,
    example_row={"prompt": "What is 2 + 3?"},
    objective="RLOO: REINFORCE with a leave-one-out baseline (each completion's reward minus the mean of the other "
              "completions of its prompt, the reward less beta x KL to the reference); clipped policy ratio",
    mask_rule="generated tokens only; the prompt is context{wrapped}",
    learning_rates={"full": 1e-6, "freeze": 5e-6, "lora": 1e-5},
    training_path="TRL RLOOTrainer",
    recipe="runner.methods.rloo",
    memory=rl_options.memory,
    checks=(rl_options.whole_groups, rl_options.clipping_acts),
    completions_per_prompt=lambda section: section.num_generations,
    section_hint="add  rloo: {reward: [{numeric: {column: answer}}]}  (declared checks), or a reward model "
                 "{model: {job: my-reward-model}}, or a function {function: my_module:score}",
    options=options,
)
