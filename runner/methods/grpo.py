"""GRPO: TRL's GRPOTrainer. Each prompt gets num_generations completions; a completion's
advantage is its score relative to the others of its group, so no value model is needed.

The reward comes from the spec: a reward model (TRL reads it at the last token) or a
function named as `module:function` in the spec's folder, called with (prompts,
completions) -> one float each.
"""

from __future__ import annotations

import torch
from trl import GRPOConfig, GRPOTrainer

from runner.execute import arguments, loading
from runner.execute.context import Context, Trained
from runner.methods.ppo import load_reward_function


def train(ctx: Context) -> Trained:
    # --- setup ---
    plan, value = ctx.plan, ctx.plan.value
    reward = value("grpo.reward")
    if reward.get("model") is not None:
        reward_model = loading.load_model(loading.location_of(plan, plan.inputs.reward_model), "reward",
                                          torch.float32, pad_token_id=ctx.tokenizer.pad_token_id)
        reward_funcs, reward_tokenizers = [reward_model], [ctx.tokenizer]
    else:
        function = load_reward_function(reward["function"], plan.inputs.spec_folder)

        def score(prompts, completions, **_):
            return [float(v) for v in function(list(prompts), list(completions))]

        score.__name__ = reward["function"].replace(":", ".")
        reward_funcs, reward_tokenizers = [score], None
    config = GRPOConfig(
        **arguments.common(plan, ctx.run),
        num_generations=value("grpo.num_generations"),
        max_completion_length=value("grpo.max_completion_length"),
        temperature=value("grpo.temperature"),
        beta=value("grpo.beta"),
        epsilon=value("grpo.epsilon"),
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
    ctx.attach(trainer)
    # --- train ---
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    return Trained.of(trainer)
