"""Experiment trackers as sinks behind the run's metrics writer: each metrics.jsonl record, as written,
goes to TensorBoard, MLflow and W&B when the spec names them (`outputs.report_to`). Each sink has the
shape of `runner.trackers.Sink` and is found through `runner.trackers.TRACKERS`.

Each tracker's package is imported only here, only when named. A run that names a tracker that is not
installed fails at its start, before the model loads. Where each tracker's data went is recorded in
the manifest; a resumed run continues the same MLflow and W&B runs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from runner.errors import RunnerError
from runner.plan.models import Plan
from runner.rundir import RunDirectory
from runner.trackers import TRACKERS, Sink, SinkOpening


class TensorBoardSink:
    """Event files in <run dir>/tensorboard (tensorboardX: TensorBoard's format without TensorBoard)."""

    def __init__(self, opening: SinkOpening) -> None:
        from tensorboardX import SummaryWriter

        self.folder = opening.run.path / "tensorboard"
        self.writer = SummaryWriter(logdir=str(self.folder))

    def record(self) -> dict[str, str]:
        return {"logdir": str(self.folder)}

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self, state: str) -> None:
        self.writer.close()


class MlflowSink:
    """One MLflow run per runner run, in the experiment named after the spec.

    The store is $MLFLOW_TRACKING_URI when set; else sqlite:///<run root>/mlflow.db, which is MLflow's own
    default (./mlflow.db) when the run root is the current folder, so `mlflow ui` there shows every spec's
    runs side by side."""

    STATES = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, opening: SinkOpening) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        for name in ("mlflow", "alembic"):  # their INFO lines (database set-up) are not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)

        plan, run, run_root, previous = opening.plan, opening.run, opening.run_root, opening.previous
        own_store = not os.environ.get("MLFLOW_TRACKING_URI")
        self.uri = f"sqlite:///{run_root / 'mlflow.db'}" if own_store else os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=self.uri)
        if previous and previous.get("tracking_uri") == self.uri:  # a resumed run continues its MLflow run
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(plan.name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            plan.name, artifact_location=(run_root / "mlflow-artifacts").as_uri() if own_store else None)
        self.run_id = self.client.create_run(experiment_id, run_name=run.run_id, tags={
            "runner.run_dir": str(run.path), "runner.method": plan.method,
            "runner.base_model": plan.inputs.base_model.reference}).info.run_id
        params = [Param(key, str(entry.value)[:6000]) for key, entry in sorted(plan.resolved.items())]
        self.client.log_batch(self.run_id, params=params)

    def record(self) -> dict[str, str]:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, stamp, step) for key, value in values.items()])

    def close(self, state: str) -> None:
        self.client.set_terminated(self.run_id, self.STATES.get(state, "FAILED"))


class WandbSink:
    """A W&B run with the runner run's id (so a resumed run continues it), its files in the run folder.
    Offline unless $WANDB_MODE says otherwise: `wandb sync` uploads it later."""

    def __init__(self, opening: SinkOpening) -> None:
        import wandb

        plan, run = opening.plan, opening.run
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "runner"), name=f"{plan.name}/{run.run_id}",
            id=run.run_id, resume="allow", dir=str(run.path), mode=os.environ.get("WANDB_MODE", "offline"),
            config={key: entry.value for key, entry in plan.resolved.items()},
            settings=wandb.Settings(console="off", silent=True))

    def record(self) -> dict[str, str]:
        return {"id": self.run.id, "dir": self.run.dir, "mode": os.environ.get("WANDB_MODE", "offline")}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, state: str) -> None:
        self.run.finish(exit_code=0 if state == "succeeded" else 1)


def open_sinks(plan: Plan, run: RunDirectory, run_root: Path, previous: dict[str, dict[str, str]]) -> dict[str, Sink]:
    """The spec's trackers, opened; a tracker that is not installed (or that this runner does not know: a
    plan from another version) stops the run here, with the fix."""
    names = plan.spec.get("outputs", {}).get("report_to", [])
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise RunnerError(f"outputs.report_to names {', '.join(unknown)}, which this runner does not know "
                          f"(it knows {', '.join(TRACKERS)})", "make a new plan with this runner: runner plan")
    missing = [TRACKERS[name] for name in names if not TRACKERS[name].installed()]
    if missing:
        raise RunnerError(f"outputs.report_to names {', '.join(t.name for t in missing)}, not installed here",
                          "; ".join(t.install for t in missing))
    return {name: TRACKERS[name].open(SinkOpening(plan, run, run_root, previous.get(name))) for name in names}
