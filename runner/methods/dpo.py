"""Direct preference optimisation: TRL's DPOTrainer on (prompt, chosen, rejected) rows.

With LoRA there is no second model: the reference is the base with the adapter switched
off (TRL does this when ref_model is None and the model is a PEFT model). Otherwise the
reference is a frozen copy of the starting weights (Context.reference).
"""

from __future__ import annotations

from trl import DPOConfig, DPOTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.methods.descriptors.dpo import DpoSection


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    dpo: DpoSection = ctx.settings.method
    config = DPOConfig(
        **arguments.common(training, ctx.run),
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        label_smoothing=dpo.label_smoothing,
        max_length=training.max_length,
    )
    trainer = DPOTrainer(args=config, ref_model=ctx.reference(), **ctx.trainer_inputs())
    # --- train ---
    return ctx.train_with(trainer)
