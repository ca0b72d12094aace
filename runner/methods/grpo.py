"""GRPO: TRL's GRPOTrainer. Each prompt gets num_generations completions; a completion's
advantage is its reward relative to the others of its group, so no value model is needed.

The reward is the spec's: one TRL reward function per term (a declared check, a Python
function, or the reward model, which TRL reads at the last token), weighted as the spec says.
Every option of the section reaches GRPOConfig under TRL's name for it.
"""

from __future__ import annotations

from trl import GRPOConfig, GRPOTrainer
from trl.trainer import grpo_trainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.execute.rewards import sampling_options, train_against_reward
from runner.methods.descriptors.grpo import GrpoSection


def config(ctx: Context, weights: list[float]) -> GRPOConfig:
    grpo: GrpoSection = ctx.settings.method
    return GRPOConfig(
        **arguments.common(ctx.settings.training, ctx.run),
        **sampling_options(grpo),
        loss_type=grpo.loss,
        scale_rewards=grpo.scale_rewards,
        importance_sampling_level=grpo.importance_sampling,
        reward_weights=weights,
    )


def train(ctx: Context) -> Trained:
    return train_against_reward(ctx, GRPOTrainer, grpo_trainer, lambda weights: config(ctx, weights))
