"""Supervised fine-tuning: TRL's SFTTrainer on rows that runner has tokenized and masked.

Rows arrive as `input_ids` and `labels` (-100 outside the loss mask the plan previewed), so
TRL neither re-renders them nor applies its own masking defaults.
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained


def train(ctx: Context) -> Trained:
    # --- setup ---
    config = SFTConfig(
        **arguments.common(ctx.plan, ctx.run),
        max_length=ctx.plan.value("training.max_length"),
        packing=False,
        completion_only_loss=False,  # the labels already carry the loss mask
        assistant_only_loss=False,
    )
    trainer = SFTTrainer(
        model=ctx.model,
        args=config,
        train_dataset=ctx.dataset("train"),
        eval_dataset=ctx.dataset("eval"),
        processing_class=ctx.tokenizer,
        callbacks=[ctx.callback],
    )
    ctx.console_is_ours(trainer)
    # --- train ---
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    return Trained.of(trainer)
