"""The settings a recipe trains with: typed, read from the plan once, before the model loads.

A plan that lacks a setting (made by another runner version, or edited by hand) fails here, at
start-up, with the key it lacks, not halfway through a run when a recipe first asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.errors import RunnerError
from runner.methods import registry
from runner.methods.registry import MethodDescriptor
from runner.plan.models import Plan


@dataclass(frozen=True)
class TrainingSettings:
    """What every recipe reads: the optimisation, step, checkpoint and hardware settings of the plan."""

    batch_size: int
    """Global batch per optimizer step (sequences, pairs, prompts, or completions)."""
    micro_batch_size: int
    gradient_accumulation: int
    total_steps: int
    warmup_steps: int
    eval_every: int | None
    checkpoint_every: int
    keep_checkpoints: int
    keep_checkpoints_after_success: bool
    learning_rate: float
    lr_scheduler: str
    weight_decay: float
    max_grad_norm: float | None
    max_length: int
    seed: int
    log_every: int
    device: str
    """cpu | cuda"""
    devices: int
    precision: str
    """fp32 | bf16 | fp16"""
    gradient_checkpointing: bool
    strategy: str
    """ddp | fsdp"""
    offload: bool
    """fsdp: the shards live in CPU memory, and the optimizer steps there."""


@dataclass(frozen=True)
class Settings:
    training: TrainingSettings
    method: Any
    """The method's spec section with every `auto` resolved (the descriptor's section model, e.g. DpoSection)."""

    @classmethod
    def of_plan(cls, plan: Plan) -> Settings:
        """The settings of the plan's own method."""
        return cls.of(plan, registry.get(plan.method))

    @classmethod
    def of(cls, plan: Plan, descriptor: MethodDescriptor) -> Settings:
        value = _reader(plan)
        steps = plan.steps
        training = TrainingSettings(
            batch_size=steps.batch_size, micro_batch_size=value("training.micro_batch_size"),
            gradient_accumulation=value("training.gradient_accumulation"), total_steps=steps.total_steps,
            warmup_steps=steps.warmup_steps, eval_every=steps.eval_every, checkpoint_every=steps.checkpoint_every,
            keep_checkpoints=value("outputs.keep_checkpoints"),
            keep_checkpoints_after_success=value("outputs.keep_checkpoints_after_success"), learning_rate=value("training.learning_rate"),
            lr_scheduler=value("training.lr_scheduler"), weight_decay=value("training.weight_decay"),
            max_grad_norm=value("training.max_grad_norm"), max_length=value("training.max_length"),
            seed=value("training.seed"), log_every=value("training.log_every"), device=value("hardware.device"),
            devices=plan.device.count, precision=value("hardware.precision"),
            gradient_checkpointing=value("hardware.gradient_checkpointing"), strategy=value("hardware.strategy"),
            offload=value("hardware.offload"))
        fields = {name: value(f"{descriptor.name}.{name}") for name in descriptor.section.model_fields}
        return cls(training, descriptor.section.model_validate(fields))


def _reader(plan: Plan):
    def value(key: str) -> Any:
        if key not in plan.resolved:
            raise RunnerError(f"the plan has no setting {key}",
                              "it was made by another runner version or edited: make a new plan with runner plan")
        return plan.resolved[key].value

    return value
