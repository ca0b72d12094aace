"""What runner's own training loops (SFT, PPO) share: the learning-rate schedule, and checkpoints that
hold the trainable tensors of some modules, the optimizer and the schedule (resuming restores all)."""

from __future__ import annotations

from runner.execute import checkpoints
from runner.execute.context import Context
from runner.execute.settings import TrainingSettings


def lr_schedule(training: TrainingSettings, optimizer):
    """Warm-up, then the plan's decay over the plan's steps; it steps once per optimizer step (SFT) or per
    iteration (PPO)."""
    from transformers import get_scheduler

    return get_scheduler(training.lr_scheduler, optimizer, num_warmup_steps=training.warmup_steps,
                         num_training_steps=training.total_steps)


def save_checkpoint(ctx: Context, step: int, optimizer, schedule, **modules) -> None:
    """The trainable tensors of each named module (None: not there), the optimizer and the schedule; every
    process of the run calls it at the same step and writes its part."""
    checkpoints.save(ctx.run.checkpoints, step, _training(optimizer, schedule, modules),
                     keep=ctx.settings.training.keep_checkpoints)
    ctx.events.event("checkpoint", step=step)


def resume(ctx: Context, optimizer, schedule, **modules) -> int:
    """The step to continue after: 0 on a fresh start, else the checkpoint's, with the named modules'
    tensors, the optimizer and the schedule restored."""
    if ctx.resume_from is None:
        return 0
    return checkpoints.load(ctx.resume_from, _training(optimizer, schedule, modules))


def _training(optimizer, schedule, modules: dict) -> checkpoints.Training:
    return checkpoints.Training({name: module for name, module in modules.items() if module is not None},
                                optimizer, schedule)
