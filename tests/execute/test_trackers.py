"""Experiment trackers: every metric of metrics.jsonl, read back from TensorBoard's event files and
MLflow's store, for runner's own loops (SFT, PPO) and a TRL recipe (DPO, through the run callback)."""

import dataclasses
import json

import numpy
import pytest

from runner import trackers
from runner.install import pip_install
from tests.conftest import write_jsonl
from tests.execute.test_job import FAST, run_spec
from tests.execute.test_rl import QUICK, prompts  # noqa: F401  (a fixture)

REPORT = "outputs:\n  report_to: [tensorboard, mlflow]\n"


def metrics_of(run) -> list[dict]:
    return [json.loads(line) for line in run.metrics.read_text().splitlines()]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_metrics(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    keys = client.get_run(run_id).data.metrics
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}


def expected(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                series.setdefault(key, []).append((record["step"], float(value)))
    return series


def assert_trackers_hold(run, manifest):
    records = metrics_of(run)
    want = expected(records)
    assert want
    board = tensorboard_scalars(manifest.trackers["tensorboard"]["logdir"])
    # TensorBoard keeps scalars as float32: equal to the record once rounded the same way
    assert board == {key: [(step, float(numpy.float32(value))) for step, value in series]
                     for key, series in want.items()}
    mlflow = manifest.trackers["mlflow"]
    assert mlflow_metrics(mlflow["tracking_uri"], mlflow["run_id"]) == want
    return mlflow


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.slow
def test_sft_metrics_reach_tensorboard_and_mlflow(tiny_project, tmp_path):
    code, run, manifest = run_spec(tiny_project, FAST + "  eval_every: 2\n" + REPORT,
                                   **{"train: data/train.jsonl": "train: data/train.jsonl\n  eval: data/train.jsonl"})
    assert code == 0, manifest.error
    assert "eval_loss" in expected(metrics_of(run))
    mlflow = assert_trackers_hold(run, manifest)
    assert mlflow["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"  # the run root's store

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow["tracking_uri"])
    recorded = client.get_run(mlflow["run_id"])
    assert recorded.info.status == "FINISHED" and recorded.info.run_name == run.run_id
    assert recorded.data.params["training.learning_rate"] == "0.001"
    assert client.get_experiment(recorded.info.experiment_id).name == "tiny"


@pytest.mark.slow
def test_dpo_through_the_trl_callback_and_a_tracking_uri_the_user_set(tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "I have no name."} for i in range(8)])
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n" + REPORT,
                                   **{"method: sft": "method: dpo"})
    assert code == 0, manifest.error
    assert "rewards/accuracies" in expected(metrics_of(run))
    mlflow = assert_trackers_hold(run, manifest)
    assert mlflow["tracking_uri"] == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_ppo_metrics_reach_the_trackers(tiny_project, prompts):  # noqa: F811
    code, run, manifest = run_spec(
        tiny_project, QUICK + "ppo:\n  reward: {function: 'scoring:score'}\n  response_length: 6\n" + REPORT,
        **{"method: sft": "method: ppo", "data/train.jsonl": "data/prompts.jsonl"})
    assert code == 0, manifest.error
    assert_trackers_hold(run, manifest)
    assert "objective/kl" in tensorboard_scalars(manifest.trackers["tensorboard"]["logdir"])


def test_a_tracker_that_is_not_installed_stops_the_run_before_loading(tiny_project, monkeypatch):
    absent = dataclasses.replace(trackers.TRACKERS["wandb"], modules=("no_such_module_here",))
    monkeypatch.setitem(trackers.TRACKERS, "wandb", absent)
    code, run, manifest = run_spec(tiny_project, FAST + "outputs:\n  report_to: [wandb]\n")
    assert code == 1 and manifest.state == "failed" and manifest.timings.load_s is None
    assert manifest.error.message == "outputs.report_to names wandb, not installed here"
    assert manifest.error.hint == pip_install("wandb")  # its forms: tests/test_install.py


class ListSink:
    """A tracker added by one row of the table: every record it got, kept in memory."""

    logged: list = []

    def __init__(self, opening) -> None:
        self.run = opening.run

    def record(self) -> dict[str, str]:
        return {"kept": str(len(ListSink.logged))}

    def log(self, step: int, values: dict[str, float]) -> None:
        ListSink.logged.append((step, values))

    def close(self, state: str) -> None:
        ListSink.logged.append(("closed", state))


def test_a_tracker_is_one_row_of_the_table_and_an_unknown_name_is_never_another_tracker(tiny_project, monkeypatch):
    """A new tracker is its row in runner.trackers.TRACKERS and its sink; a plan that names a tracker this runner
    does not know fails at the start (it used to become W&B)."""
    from runner.errors import RunnerError
    from runner.execute.trackers import open_sinks
    from runner.rundir import read_plan

    monkeypatch.setitem(trackers.TRACKERS, "wandb", trackers.Tracker("wandb", ("json",), "wandb",
                                                                     f"{__name__}:ListSink"))
    ListSink.logged.clear()
    code, run, manifest = run_spec(tiny_project, FAST + "outputs:\n  report_to: [wandb]\n")
    assert code == 0, manifest.error
    assert ListSink.logged[-1] == ("closed", "succeeded") and isinstance(ListSink.logged[0][0], int)
    assert manifest.trackers["wandb"]["kept"].isdigit()
    monkeypatch.delitem(trackers.TRACKERS, "wandb")
    with pytest.raises(RunnerError, match="names wandb, which this runner does not know"):
        open_sinks(read_plan(run.plan), run, run.path.parent, {})
