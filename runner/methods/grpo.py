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
from runner.execute.rewards import load_reward
from runner.methods.descriptors.grpo import GrpoSection


def config(ctx: Context, weights: list[float]) -> GRPOConfig:
    grpo: GrpoSection = ctx.settings.method
    return GRPOConfig(
        **arguments.common(ctx.settings.training, ctx.run),
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        top_p=1.0,
        top_k=0,
        loss_type=grpo.loss,
        scale_rewards=grpo.scale_rewards,
        beta=grpo.beta,
        num_iterations=grpo.num_iterations,
        epsilon=grpo.epsilon,
        epsilon_high=grpo.epsilon_high,
        importance_sampling_level=grpo.importance_sampling,
        mask_truncated_completions=grpo.mask_truncated_completions,
        reward_weights=weights,
    )


def train(ctx: Context) -> Trained:
    # --- setup ---
    grpo: GrpoSection = ctx.settings.method
    reward = load_reward(ctx.plan, grpo.reward, ctx.tokenizer, next(ctx.model.parameters()).device)
    functions, tokenizers, weights = reward.trl_reward_functions()
    with ctx.reference_for(grpo_trainer):
        trainer = GRPOTrainer(
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
