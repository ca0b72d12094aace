"""Direct preference optimisation: TRL's DPOTrainer on (prompt, chosen, rejected) rows.

With LoRA there is no second model: the reference is the base with the adapter switched
off (TRL does this when ref_model is None and the model is a PEFT model). Otherwise TRL
makes a frozen copy of the starting weights.
"""

from __future__ import annotations

from trl import DPOConfig, DPOTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained


def train(ctx: Context) -> Trained:
    # --- setup ---
    value = ctx.plan.value
    config = DPOConfig(
        **arguments.common(ctx.plan, ctx.run),
        beta=value("dpo.beta"),
        loss_type=[value("dpo.loss_type")],
        label_smoothing=value("dpo.label_smoothing"),
        max_length=value("training.max_length"),
    )
    trainer = DPOTrainer(
        model=ctx.model,
        ref_model=None,
        args=config,
        train_dataset=ctx.dataset("train"),
        eval_dataset=ctx.dataset("eval"),
        processing_class=ctx.tokenizer,
    )
    ctx.attach(trainer)
    # --- train ---
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    return Trained.of(trainer)
