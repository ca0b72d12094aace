"""ORPO (odds-ratio preference optimisation): TRL's ORPOTrainer on (prompt, chosen, rejected) rows.

One stage, no reference model: the loss is the cross-entropy of the chosen answer (supervised
learning) minus beta x log sigmoid of the log odds ratio of chosen over rejected, the odds taken
from each answer's mean token log-probability. TRL keeps ORPO under `trl.experimental`; the import
below is the one line to change when it moves.
"""

from __future__ import annotations

import warnings

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.methods.descriptors.orpo import OrpoSection

with warnings.catch_warnings():  # importing trl.experimental warns that it is experimental; the plan says whose code runs
    warnings.simplefilter("ignore")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    orpo: OrpoSection = ctx.settings.method
    config = ORPOConfig(
        **arguments.common(training, ctx.run),
        beta=orpo.beta,
        max_length=training.max_length,
    )
    trainer = ORPOTrainer(args=config, **ctx.trainer_inputs())
    # --- train ---
    return ctx.train_with(trainer)
