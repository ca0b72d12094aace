"""Fixtures of the method tests."""

import pytest

from runner.execute.context import Context, Trained


@pytest.fixture
def built(monkeypatch):
    """The trainers the recipes build, captured instead of trained (the run goes on without training)."""
    made = []

    def capture(self, trainer):
        made.append(trainer)
        return Trained(trainer.model, 0)

    monkeypatch.setattr(Context, "train_with", capture)
    return made
