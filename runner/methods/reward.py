"""Reward model: the base with a scalar head, trained by TRL's RewardTrainer so that the chosen
answer scores above the rejected one (Bradley-Terry loss on the score difference)."""

from __future__ import annotations

from trl import RewardConfig, RewardTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.methods.descriptors.reward import RewardSection


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    reward: RewardSection = ctx.settings.method
    config = RewardConfig(
        **arguments.common(training, ctx.run),
        max_length=training.max_length,
        center_rewards_coefficient=reward.center_rewards_coefficient,
    )
    trainer = RewardTrainer(args=config, **ctx.trainer_inputs())
    # --- train ---
    return ctx.train_with(trainer)
