"""The experiment trackers a spec may report to (`outputs.report_to`), and what each needs installed.

Torch-free and import-free: validate asks whether a tracker's package is installed without importing
it. The sinks that write to the trackers are in `runner.execute.trackers`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Tracker:
    name: str
    modules: tuple[str, ...]
    """What must be importable to report to it."""
    extra: str
    """The pip extra of runner-finetune that installs it."""

    @property
    def install(self) -> str:
        from runner.install import pip_install

        return pip_install(self.extra)

    def installed(self) -> bool:
        return all(_importable(module) for module in self.modules)


TRACKERS = {
    "tensorboard": Tracker("tensorboard", ("tensorboardX",), "tensorboard"),
    "mlflow": Tracker("mlflow", ("mlflow",), "mlflow"),
    "wandb": Tracker("wandb", ("wandb",), "wandb"),
}
TRACKER_NAMES = tuple(TRACKERS)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
