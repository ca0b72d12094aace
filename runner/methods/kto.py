"""KTO (Kahneman-Tversky optimisation): TRL's KTOTrainer on unpaired rows, each one answer labelled
desirable (true) or not (false), so no pairs are needed.

A desirable answer's loss is 1 - sigmoid(beta x (log-ratio - KL)), an undesirable one's
1 - sigmoid(beta x (KL - log-ratio)), the log-ratio taken against the reference (the base; under
LoRA the base with the adapter switched off) and the KL baseline estimated from the micro-batch's
answers paired with the wrong prompts: hence micro-batches of at least two rows, kept in file order.
"""

from __future__ import annotations

from trl import KTOConfig, KTOTrainer

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.methods.descriptors.kto import KtoSection


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    kto: KtoSection = ctx.settings.method
    config = KTOConfig(
        **arguments.common(training, ctx.run),
        beta=kto.beta,
        desirable_weight=kto.desirable_weight,
        undesirable_weight=kto.undesirable_weight,
        max_length=training.max_length,
    )
    trainer = KTOTrainer(args=config, ref_model=ctx.reference(), **ctx.trainer_inputs())
    # --- train ---
    return ctx.train_with(trainer)
