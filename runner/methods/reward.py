"""Reward model: the base with a scalar head, trained by TRL's RewardTrainer so that the chosen
answer scores above the rejected one (Bradley-Terry loss on the score difference)."""

from __future__ import annotations

from trl import RewardConfig, RewardTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained


def train(ctx: Context) -> Trained:
    # --- setup ---
    value = ctx.plan.value
    config = RewardConfig(
        **arguments.common(ctx.plan, ctx.run),
        max_length=value("training.max_length"),
        center_rewards_coefficient=value("reward.center_rewards_coefficient"),
    )
    trainer = RewardTrainer(
        model=ctx.model,
        args=config,
        train_dataset=ctx.dataset("train"),
        eval_dataset=ctx.dataset("eval"),
        processing_class=ctx.tokenizer,
    )
    ctx.attach(trainer)
    # --- train ---
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    return Trained.of(trainer)
