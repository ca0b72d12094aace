"""The experiment trackers a spec may report to (`outputs.report_to`): one table, read by the spec's
choices, by validate (is the package installed?) and by the run (which sink to open). Adding a tracker is
one row here, its sink (a class with the `Sink` shape in `runner.execute.trackers`) and its pip extra.

Torch-free and import-free: validate asks whether a tracker's package is installed without importing
it, and a sink's module is imported only by a run that reports to it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class SinkOpening:
    """What every sink is opened with: the plan, its run folder, the run root, and what the tracker
    recorded the last time this run started (a resumed run continues the same tracker run)."""

    plan: Any
    """runner.plan.models.Plan"""
    run: Any
    """runner.rundir.RunDirectory"""
    run_root: Path
    previous: dict[str, str] | None


class Sink(Protocol):
    """Where every metrics.jsonl record also goes."""

    def __init__(self, opening: SinkOpening) -> None: ...

    def record(self) -> dict[str, str]:
        """Where its data went (in the manifest's `trackers`, and `previous` when the run resumes)."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self, state: str) -> None:
        """The run ended in `state` (succeeded, failed, interrupted)."""


@dataclass(frozen=True)
class Tracker:
    name: str
    modules: tuple[str, ...]
    """What must be importable to report to it."""
    extra: str
    """The pip extra of runner-finetune that installs it."""
    sink: str
    """`module:Class` of its Sink."""

    @property
    def install(self) -> str:
        from runner.install import pip_install

        return pip_install(self.extra)

    def installed(self) -> bool:
        return all(importable(module) for module in self.modules)

    def open(self, opening: SinkOpening) -> Sink:
        module, _, name = self.sink.partition(":")
        return getattr(importlib.import_module(module), name)(opening)


TRACKERS = {tracker.name: tracker for tracker in (
    Tracker("tensorboard", ("tensorboardX",), "tensorboard", "runner.execute.trackers:TensorBoardSink"),
    Tracker("mlflow", ("mlflow",), "mlflow", "runner.execute.trackers:MlflowSink"),
    Tracker("wandb", ("wandb",), "wandb", "runner.execute.trackers:WandbSink"),
)}
TRACKER_NAMES = tuple(TRACKERS)


def importable(module: str) -> bool:
    """Whether `module` can be imported here: found, never imported (validate stays light)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
