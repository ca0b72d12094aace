"""What a method recipe gets: the plan, the run directory, the prepared model, tokenizer and data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.execute.callbacks import RunCallback
from runner.execute.data import Split
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
    run: RunDirectory
    model: object
    """The model to train: trainable selection applied, LoRA adapters attached."""
    tokenizer: object
    splits: dict[str, Split]
    callback: RunCallback
    resume_from: Path | None
    """A checkpoint to resume from, or None for a fresh start."""

    def console_is_ours(self, trainer) -> None:
        """Drop the trainer's own console printing; the run's callback reports progress and metrics."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)

    def dataset(self, role: str):
        from datasets import Dataset

        split = self.splits.get(role)
        return Dataset.from_list(split.examples) if split else None
