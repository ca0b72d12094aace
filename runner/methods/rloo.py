"""RLOO: TRL's RLOOTrainer. Each prompt gets num_generations completions; a completion's advantage is
its reward (less beta x KL to the reference) minus the mean reward of the other completions of its
prompt, the leave-one-out baseline.

The reward is the spec's, as for GRPO: one TRL reward function per term, weighted as the spec says.
"""

from __future__ import annotations

from trl import RLOOConfig, RLOOTrainer
from trl.trainer import rloo_trainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.execute.rewards import sampling_options, train_against_reward
from runner.methods.descriptors.rloo import RlooSection


def config(ctx: Context, weights: list[float]) -> RLOOConfig:
    rloo: RlooSection = ctx.settings.method
    return RLOOConfig(
        **arguments.common(ctx.settings.training, ctx.run),
        **sampling_options(rloo),
        normalize_advantages=rloo.normalize_advantages,
        reward_weights=weights,
    )


def train(ctx: Context) -> Trained:
    return train_against_reward(ctx, RLOOTrainer, rloo_trainer, lambda weights: config(ctx, weights))
