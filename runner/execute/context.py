"""What a method recipe gets: the plan, the run directory, the prepared model, tokenizer and data."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.execute.data import Split
from runner.execute.events import EventLog, MetricsLog
from runner.execute.settings import RunSettings
from runner.execute.stopping import StopRequest
from runner.plan.models import Plan
from runner.rundir import RunDirectory


@dataclass
class Trained:
    """What a recipe hands back: the trained model and how far it got."""

    model: object
    steps: int
    tokens_seen: int = 0

    @classmethod
    def of(cls, trainer) -> Trained:
        """From a transformers Trainer (the TRL recipes)."""
        return cls(trainer.model, trainer.state.global_step, trainer.state.num_input_tokens_seen or 0)


@dataclass
class Context:
    plan: Plan
    settings: RunSettings
    """What the recipe trains with, typed and read from the plan before the model loaded."""
    run: RunDirectory
    model: object
    """The model to train: trainable selection applied, LoRA adapters attached."""
    tokenizer: object
    splits: dict[str, Split]
    events: EventLog
    metrics: MetricsLog
    stop: StopRequest
    """Set by SIGINT/SIGTERM: write a checkpoint at the end of the step and return (stopping.AgreedStop
    says when, on every rank alike)."""
    resume_from: Path | None
    """A checkpoint to resume from, or None for a fresh start."""
    during: Callable[[object, int], None] | None = None
    """The evals while training (the job's): called with the model after every optimizer step; it evaluates
    on the plan's schedule (evals.every) and does nothing otherwise."""

    def evaluate(self, model, step: int) -> None:
        """For every recipe, after each optimizer step (its own loop, or the trainer's callback)."""
        if self.during is not None:
            self.during(model, step)

    def attach(self, trainer) -> None:
        """For the TRL recipes: the run's callback (metrics, progress, stop at a signal) replaces the
        trainer's own console printing."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from runner.execute.callbacks import RunCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RunCallback(self.events, self.metrics, self.stop, self.settings.training.total_steps,
                                         self.evaluate))

    def reference(self):
        """The frozen reference of the methods that pull towards the base: a copy of the model as training
        starts, or None under LoRA, where the base with the adapter switched off is the reference. Given to
        TRL, so that it does not load the base a second time from the config's path: that reload loses a
        hub revision, and fails on a GGUF's converted config."""
        import copy

        if self.plan.trainable.mode == "lora":
            return None
        return copy.deepcopy(self.model).requires_grad_(False).eval()

    @contextmanager
    def reference_for(self, trainer_module):
        """While a TRL trainer that builds its own reference (GRPO, RLOO) is made: its reload of the base from the
        config's path (`create_model_from_path`, which fails on a GGUF's converted config and loses a hub
        revision) returns `reference()` instead, and TRL prepares that copy as it would its own."""
        reference = self.reference()
        if reference is None:
            yield
            return
        original = trainer_module.create_model_from_path
        trainer_module.create_model_from_path = lambda *args, **kwargs: reference
        try:
            yield
        finally:
            trainer_module.create_model_from_path = original

    def trainer_inputs(self) -> dict:
        """What every TRL trainer of pairs or labelled answers takes besides its config: the model, the
        datasets and the tokenizer."""
        return dict(model=self.model, train_dataset=self.dataset("train"), eval_dataset=self.dataset("eval"),
                    processing_class=self.tokenizer)

    def train_with(self, trainer) -> Trained:
        """For the TRL recipes: attach the run's callback, give the trainer LoRA+'s optimizer when the plan
        asks for it, train (from the checkpoint when resuming) and hand back what was trained."""
        self.attach(trainer)
        lora, training = self.plan.trainable.lora, self.settings.training
        if lora is not None and lora.loraplus_lr_ratio:  # the trainer keeps an optimizer it is given
            from runner.execute.trainable import optimizer

            trainer.optimizer = optimizer(trainer.model, lora, training.learning_rate, training.weight_decay,
                                          fused=training.device == "cuda")
        trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        return Trained.of(trainer)

    def dataset(self, role: str):
        from datasets import Dataset

        split = self.splits.get(role)
        return Dataset.from_list(split.examples) if split else None
