"""lm-eval-harness tasks on a model in memory (the `evals` extra).

lm-eval is imported here only, when a run evaluates a task. Its hub datasets are read from the datasets
cache, never downloaded (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are set while it runs), and a task is
evaluated from its YAML's folder, where the data files it names are found. The model is wrapped, not
loaded again: lm-eval scores exactly the weights in memory, and spends no time loading them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from runner import confine
from runner.errors import RunnerError
from runner.evals import tasks
from runner.install import pip_install

NOT_METRICS = {"sample_len", "alias", "name"}
"""Keys of lm-eval's results that describe the task, not the model."""
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


@dataclass(frozen=True)
class TaskResult:
    scores: dict[str, float]
    """{metric: value}, named as in lm-eval's results: `acc`, or `exact_match,strict-match` for a filter
    other than none."""
    rows: list[dict]
    """Per document: its id, the target, the model's (filtered) response and its metrics."""


def evaluate(model, tokenizer, task: str, include_path: Path | None, *, limit: int | None, num_fewshot: int | None,
             batch_size: int, seed: int = 0) -> TaskResult:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RunnerError(f"evaluating the lm-eval task {task} needs lm-eval, which is not installed",
                          f"install it: {pip_install(tasks.EXTRA)}") from None
    found, _ = tasks.find_task(task, include_path)
    if include_path is not None:
        _check_confined(include_path, found)
    folder = found.path.parent if found is not None and include_path is not None else Path.cwd()
    was_training = model.training
    device = next(model.parameters()).device
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _offline(), contextlib.chdir(folder), _quiet_stderr():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
            manager = TaskManager(verbosity="ERROR", include_path=str(include_path) if include_path else None,
                                  include_defaults=include_path is None)
            results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=True, bootstrap_iters=0,
                                      random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                      fewshot_random_seed=seed, verbosity="ERROR")
    except (ConnectionError, OSError) as error:
        if found is not None and found.dataset is not None:
            raise RunnerError(f"task {task} could not read the hub dataset {found.dataset} offline: "
                              f"{str(error).splitlines()[0]}",
                              f"runner never downloads: fetch it where the hub is reachable: "
                              f"{tasks.fetch_command(found)}") from None
        raise RunnerError(f"task {task} could not read its data: {str(error).splitlines()[0]}",
                          "data files of a task are relative to its YAML's folder") from None
    except KeyError as error:
        raise RunnerError(f"lm-eval has no task {task}: {error}", "see: runner validate") from None
    finally:
        model.train(was_training)
    return TaskResult(_scores(results["results"].get(task, {})), _rows(results.get("samples", {}).get(task, [])))


def _check_confined(include_path: Path, found: tasks.TaskFile | None) -> None:
    """lm-eval opens the task files and their data itself: under the watch daemon (runner.confine) each is
    checked first, so a task folder that links out of the spec's folder is refused, not read."""
    paths = tasks.yaml_files(include_path) + [path for files in (found.data_files().values() if found else ())
                                              for path in files]
    for path in paths:
        try:
            confine.check(path)
        except confine.Refused as error:
            raise RunnerError(str(error), "under the watch daemon a task's files stay in the spec's folder") from None


def _scores(results: dict) -> dict[str, float]:
    scores = {}
    for key, value in results.items():
        metric, _, kind = key.partition(",")
        if metric.endswith("_stderr") or metric in NOT_METRICS or not isinstance(value, (int, float)) \
                or isinstance(value, bool):
            continue
        value = float(value)
        if math.isfinite(value):
            scores[metric if kind in ("none", "") else key] = value
    return scores


def _rows(samples: list[dict]) -> list[dict]:
    return [{"doc_id": sample.get("doc_id"), "target": _plain(sample.get("target")),
             "response": _plain(sample.get("filtered_resps")),
             "scores": {name: _plain(sample.get(name)) for name in sample.get("metrics", [])}} for sample in samples]


def _plain(value):
    """A sample's value as JSON holds it (numpy numbers, tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


@contextlib.contextmanager
def _quiet_stderr():
    """lm-eval's progress bars and warnings, and its `git describe` of the working folder ("fatal: not a git
    repository"), are not the run's story: its stderr (the descriptor, which child processes share) goes
    to a scratch file while it runs. Errors still arrive as exceptions."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _offline():
    """Offline (and without progress bars) while lm-eval runs: the environment, and the flags the hub and
    datasets libraries read from it when they were imported (a run imported them before)."""
    import datasets.config
    import huggingface_hub.constants

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
             (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    before = {key: os.environ.get(key) for key in OFFLINE}, [getattr(module, name) for module, name in flags]
    os.environ.update(OFFLINE)
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for key, value in before[0].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for (module, name), value in zip(flags, before[1]):
            setattr(module, name, value)
