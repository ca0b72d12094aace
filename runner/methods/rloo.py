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
from runner.execute.rewards import load_reward
from runner.methods.descriptors.rloo import RlooSection


def config(ctx: Context, weights: list[float]) -> RLOOConfig:
    rloo: RlooSection = ctx.settings.method
    return RLOOConfig(
        **arguments.common(ctx.settings.training, ctx.run),
        num_generations=rloo.num_generations,
        max_completion_length=rloo.max_completion_length,
        temperature=rloo.temperature,
        top_p=1.0,
        top_k=0,
        beta=rloo.beta,
        normalize_advantages=rloo.normalize_advantages,
        num_iterations=rloo.num_iterations,
        epsilon=rloo.epsilon,
        epsilon_high=rloo.epsilon_high,
        mask_truncated_completions=rloo.mask_truncated_completions,
        reward_weights=weights,
    )


def train(ctx: Context) -> Trained:
    # --- setup ---
    rloo: RlooSection = ctx.settings.method
    reward = load_reward(ctx.plan, rloo.reward, ctx.tokenizer, next(ctx.model.parameters()).device)
    functions, tokenizers, weights = reward.trl_reward_functions()
    with ctx.reference_for(rloo_trainer):
        trainer = RLOOTrainer(
            model=ctx.model,
            reward_funcs=functions,
            args=config(ctx, weights),
            train_dataset=ctx.dataset("train"),
            eval_dataset=ctx.dataset("eval"),
            processing_class=ctx.tokenizer,
            reward_processing_classes=tokenizers,
        )
    # --- train ---
    return ctx.train_with(trainer)
