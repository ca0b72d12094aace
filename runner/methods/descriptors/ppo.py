"""ppo: runner's own PPO (runner/methods/ppo.py) against a reward model or a reward function."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from runner.methods.registry import (PROMPTS, REWARD, VALUE, Batching, Finding, MemoryTerms, MethodDescriptor,
                                     unless_lora)
from runner.rewards.spec import DeclaredReward
from runner.spec.fields import Count, Section


class PpoSection(Section):
    reward: DeclaredReward
    """What a response scores: a list of weighted terms, each a declared check (exact, numeric, regex,
    contains, json, format, length), a reward model ({model: ...}) or a Python function ({function:
    module:name}). One term may be written without the list."""
    kl_coef: Annotated[float, Field(ge=0)] = 0.05
    """Weight of the KL penalty towards the reference model."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """k1: logp - ref_logp; k3: exp(-d) - 1 + d (unbiased, non-negative)."""
    cliprange: Annotated[float, Field(gt=0)] = 0.2
    """Policy ratio clip."""
    cliprange_value: Annotated[float, Field(gt=0)] = 0.2
    """Value clip around the rollout's values."""
    vf_coef: Annotated[float, Field(ge=0)] = 0.1
    """Weight of the value loss."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Discount."""
    lam: Annotated[float, Field(ge=0, le=1)] = 0.95
    """GAE lambda."""
    num_ppo_epochs: Count = 4
    """Optimisation passes over each rollout batch."""
    num_mini_batches: Count = 1
    """Optimizer steps per PPO epoch; must divide the batch."""
    response_length: Count = 53
    """Tokens generated per prompt at most."""
    temperature: Annotated[float, Field(gt=0)] = 0.7
    """Sampling temperature; logprobs use the same one."""
    missing_eos_penalty: Annotated[float, Field(gt=0)] | None = None
    """Subtracted from the score of responses that never stop."""
    whiten_rewards: bool = False
    """Whiten per-token rewards before GAE (needs minibatches of 8 or more)."""
    total_episodes: Count | None = None
    """Prompts to roll out in all; null is epochs * rows."""
    value_model: Literal["auto", "separate", "shared"] = "auto"
    """separate: its own model from the reward model; shared: a second adapter (LoRA only)."""
    num_sample_generations: Annotated[int, Field(ge=0)] = 10
    """Times during training to log sample generations."""


def value_model(section: PpoSection, mode: str) -> tuple[str, str]:
    """(value model, why): `auto` is a second adapter under LoRA, else a separate model."""
    if section.value_model != "auto":
        return section.value_model, "spec"
    if mode == "lora":
        return "shared", "LoRA: a second adapter on the shared base"
    return "separate", "a separate model, started from the reward model when there is one"


def memory(section: PpoSection, mode: str) -> MemoryTerms:
    models = unless_lora(mode)
    if value_model(section, mode)[0] == "separate":
        models += (VALUE,)
    if section.reward.model is not None:
        models += (REWARD,)
    return MemoryTerms(generated_tokens=section.response_length, models=models)


def minibatch_arithmetic(section: PpoSection, batching: Batching) -> Iterator[Finding]:
    """The batch splits into num_mini_batches minibatches, each into whole micro-batches."""
    batch, micro, count = batching.batch, batching.micro, section.num_mini_batches
    if batch == "auto":
        return
    if batch % count:
        yield Finding(("ppo", "num_mini_batches"), f"num_mini_batches {count} does not divide the batch {batch}",
                      f"use a batch_size that is a multiple of {count}")
        return
    minibatch = batch // count
    if micro != "auto" and minibatch % micro:
        yield Finding(("training", "micro_batch_size"),
                      f"micro_batch_size {micro} does not divide the minibatch {minibatch} (batch {batch} / "
                      f"num_mini_batches {count})", "use a divisor of the minibatch, or auto")
    if section.whiten_rewards and minibatch < 8:
        yield Finding(("ppo", "whiten_rewards"), f"whiten_rewards needs minibatches of 8 rows or more (this one has "
                      f"{minibatch})", "raise batch_size or lower num_mini_batches")


def shared_value_model_needs_lora(section: PpoSection, batching: Batching) -> Iterator[Finding]:
    if section.value_model == "shared" and batching.mode != "lora":
        yield Finding(("ppo", "value_model"), "a shared value model is a second LoRA adapter",
                      "set trainable.mode: lora, or value_model: separate")


DESCRIPTOR = MethodDescriptor(
    name="ppo",
    summary="reinforcement learning against declared checks, a reward model or a function (runner's PPO)",
    section=PpoSection,
    formats=("prompt_only", "prompt_completion", "messages", "preference"),
    rows=PROMPTS,
    example_row={"prompt": "What is your name?"},
    objective="PPO: the reward minus kl_coef x KL to the reference, per token; clipped policy and value losses on "
              "GAE advantages",
    mask_rule="generated tokens only; the prompt is context{wrapped}",
    learning_rates={"full": 3e-6, "freeze": 1e-5, "lora": 1e-5},
    training_path="runner's own PPO trainer (runner/methods/ppo.py)",
    recipe="runner.methods.ppo",
    runner_loop=True,
    memory=memory,
    dropout=False,
    checks=(minibatch_arithmetic, shared_value_model_needs_lora),
    minibatches=lambda section: section.num_mini_batches,
    episodes=lambda section: section.total_episodes,
    resolve=lambda section, mode: {"value_model": value_model(section, mode)},
    section_hint="add  ppo: {reward: {model: {job: my-reward-model}}}, or declared checks {reward: [{numeric: "
                 "{column: answer}}]}, or a function {reward: {function: my_module:score}}",
    single_device=True,
)
