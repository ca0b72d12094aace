"""The settings a recipe trains with: typed, read from the plan once, before the model loads.

The plan's record types the common settings (a plan without one does not load); a method's section is
typed here, so a plan that lacks one of its fields (made by another runner version, or edited by hand)
fails at start-up with the key it lacks, not halfway through a run when a recipe first asks for it.
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
class RunSettings:
    """What a recipe trains with: the plan's training settings and its method's section, typed."""

    training: TrainingSettings
    method: Any
    """The method's spec section with every `auto` resolved (the descriptor's section model, e.g. DpoSection)."""

    @classmethod
    def of_plan(cls, plan: Plan) -> RunSettings:
        """The settings of the plan's own method."""
        return cls.of(plan, registry.get(plan.method))

    @classmethod
    def of(cls, plan: Plan, descriptor: MethodDescriptor) -> RunSettings:
        resolved, steps = plan.settings, plan.steps
        hardware, training, outputs = resolved.hardware, resolved.training, resolved.outputs
        typed = TrainingSettings(
            batch_size=steps.batch_size, micro_batch_size=training.micro_batch_size.value,
            gradient_accumulation=training.gradient_accumulation.value, total_steps=steps.total_steps,
            warmup_steps=steps.warmup_steps, eval_every=steps.eval_every, checkpoint_every=steps.checkpoint_every,
            keep_checkpoints=outputs.keep_checkpoints.value,
            keep_checkpoints_after_success=outputs.keep_checkpoints_after_success.value,
            learning_rate=training.learning_rate.value, lr_scheduler=training.lr_scheduler.value,
            weight_decay=training.weight_decay.value, max_grad_norm=training.max_grad_norm.value,
            max_length=training.max_length.value, seed=training.seed.value, log_every=training.log_every.value,
            device=hardware.device.value, devices=plan.device.count, precision=hardware.precision.value,
            gradient_checkpointing=hardware.gradient_checkpointing.value, strategy=hardware.strategy.value,
            offload=hardware.offload.value)
        missing = [name for name in descriptor.section.model_fields if name not in resolved.method]
        if missing:
            raise RunnerError(f"the plan has no setting {descriptor.name}.{missing[0]}",
                              "it was made by another runner version or edited: make a new plan with runner plan")
        section = descriptor.section.model_validate({name: resolved.method[name].value
                                                     for name in descriptor.section.model_fields})
        return cls(typed, section)
