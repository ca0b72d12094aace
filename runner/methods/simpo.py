"""SimPO (simple preference optimisation): TRL's CPOTrainer with its SimPO loss, on (prompt, chosen,
rejected) rows.

No reference model: an answer's reward is its mean token log-probability times beta, and the loss
is -log sigmoid(reward(chosen) - reward(rejected) - gamma); cpo_alpha > 0 adds the chosen answer's
cross-entropy (CPO-SimPO). TRL keeps CPO under `trl.experimental`; the import below is the one line
to change when it moves.
"""

from __future__ import annotations

import warnings

from runner.execute import arguments
from runner.execute.context import Context, Trained
from runner.methods.descriptors.simpo import SimpoSection

with warnings.catch_warnings():  # importing trl.experimental warns that it is experimental; the plan says whose code runs
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOConfig, CPOTrainer


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    simpo: SimpoSection = ctx.settings.method
    config = CPOConfig(
        **arguments.common(training, ctx.run),
        loss_type="simpo",
        beta=simpo.beta,
        simpo_gamma=simpo.gamma,
        cpo_alpha=simpo.cpo_alpha,
        max_length=training.max_length,
    )
    trainer = CPOTrainer(args=config, **ctx.trainer_inputs())
    # --- train ---
    return ctx.train_with(trainer)
