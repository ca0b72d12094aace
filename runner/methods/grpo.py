"""GRPO: TRL's GRPOTrainer. Each prompt gets num_generations completions; a completion's
advantage is its score relative to the others of its group, so no value model is needed.

The reward comes from the spec: a reward model (TRL reads it at the last token) or a
function named as `module:function` in the spec's folder, called with (prompts,
completions) -> one float each.
"""

from __future__ import annotations

from trl import GRPOConfig, GRPOTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.execute.rewards import load_reward
from runner.methods.descriptors.grpo import GrpoSection


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    grpo: GrpoSection = ctx.settings.method
    reward = load_reward(ctx.plan, grpo.reward, ctx.tokenizer, next(ctx.model.parameters()).device)
    if reward.model is not None:
        reward_funcs, reward_tokenizers = [reward.model], [ctx.tokenizer]
    else:
        def score(prompts, completions, **_):
            return [float(v) for v in reward.function(list(prompts), list(completions))]

        score.__name__ = grpo.reward.function.replace(":", ".")
        reward_funcs, reward_tokenizers = [score], None
    config = GRPOConfig(
        **arguments.common(training, ctx.run),
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        beta=grpo.beta,
        epsilon=grpo.epsilon,
        top_p=1.0,
        top_k=0,
    )
    trainer = GRPOTrainer(
        model=ctx.model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=ctx.dataset("train"),
        processing_class=ctx.tokenizer,
        reward_processing_classes=reward_tokenizers,
    )
    # --- train ---
    return ctx.train_with(trainer)
