"""Checkpoints of runner's own training loops (SFT, PPO): safetensors and JSON, never a pickle.

    checkpoint-<step>/
      tensors/*.safetensors  the trainable parameters and the optimizer's state tensors, written by
                             torch.distributed.checkpoint with its Hugging Face storage writer: each
                             process writes files of about 256 MiB with the slices it holds (under
                             FSDP its shards; a tensor that every process holds is written once), and
                             the offsets of each slice in each file's JSON header
      state.json             the rest: step, optimizer hyperparameters, learning-rate schedule
      rng-<rank>.json        each process's random-number state
      trainer_state.json     written last, after every process finished: marks the checkpoint complete

Why this format: DCP's default FileSystemWriter pickles its `.metadata` file and every non-tensor,
and its reader unpickles them (`weights_only=False`), so a crafted checkpoint runs code on resume.
The Hugging Face storage reader builds the same metadata from the safetensors headers (JSON), and
reads only tensors; everything else is JSON that runner reads itself. DCP still reshards on
load: a checkpoint written by N processes resumes on M, sharded or not.

Writing goes to `checkpoint-<step>.partial` and is renamed into place, so a run killed while
writing leaves only a `.partial` folder that resuming ignores (RunDirectory.latest_checkpoint).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.fsutil import write_atomically

TENSORS = "tensors"
STATE_FILE = "state.json"
DONE_FILE = "trainer_state.json"
FILE_BYTES = 256 * 2**20
"""Tensors per checkpoint file, in bytes (runner.plan.memory.CHECKPOINT_FILE_BYTES counts the same)."""
PICKLED_FORMAT = "state.pt"
"""Written by runner before checkpoints dropped pickle; never loaded."""


@dataclass
class Training:
    """What a checkpoint restores: the trainable parameters of named modules, one optimizer, its schedule."""

    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    extra: dict = field(default_factory=dict)
    """JSON-serialisable values a loop keeps beside them."""


def save(folder: Path, step: int, training: Training, keep: int) -> Path:
    """Write a checkpoint; every process of the run calls this at the same step."""
    import torch.distributed.checkpoint as dcp

    rank = _rank()
    target = folder / f"checkpoint-{step}"
    staging = target.with_name(target.name + ".partial")
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        (staging / TENSORS).mkdir(parents=True)
    _barrier()
    tensors, state = _flatten(training)
    with _one_process_is_expected():
        dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(
            str(staging / TENSORS), save_distributed=True, fqn_to_index_mapping=files_of(tensors)))
    write_atomically(staging / f"rng-{rank}.json", json.dumps(
        {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}))
    if rank == 0:
        write_atomically(staging / STATE_FILE, json.dumps({"step": step, **state, "extra": training.extra}))
    _barrier()
    if rank == 0:
        write_atomically(staging / DONE_FILE, json.dumps({"global_step": step}))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        done = sorted((p for p in folder.glob("checkpoint-*") if not p.name.endswith(".partial")),
                      key=lambda p: int(p.name.rsplit("-", 1)[1]))
        for old in done[:-keep]:
            shutil.rmtree(old)
    _barrier()
    return target


def files_of(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """Which file (from 1) each tensor goes to: consecutive tensors, about FILE_BYTES a file. The writer
    serialises a whole file in memory (twice: safetensors' bytes, then the stream's) before writing it, so
    bounded files bound the memory a checkpoint takes on top of training (runner.plan.memory counts it).
    Sizes are the tensors' global ones, so every process of a sharded run maps them alike."""
    mapping, index, filled = {}, 1, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if filled and filled + size > FILE_BYTES:
            index, filled = index + 1, 0
        mapping[name] = index
        filled += size
    return mapping


def load(checkpoint: Path, training: Training) -> int:
    """Restore `training` in place from a checkpoint (written by any number of processes); return its
    step. Every process of the run calls this."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import _init_optim_state

    if (checkpoint / PICKLED_FORMAT).is_file() and not (checkpoint / STATE_FILE).is_file():
        raise RunnerError(f"{checkpoint} is in the pickle format of an older runner, which is never loaded "
                          "(unpickling a file can run code)",
                          f"delete {checkpoint.parent} to train from the start")
    state = _read_json(checkpoint / STATE_FILE)
    if not isinstance(state.get("step"), int) or not isinstance(state.get("schedule"), dict):
        raise RunnerError(f"{checkpoint / STATE_FILE} is not a runner checkpoint state", f"delete {checkpoint}")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(training.optimizer.param_groups) or any(
            not isinstance(saved, dict) or len(saved.get("params", ())) != len(group["params"])
            for saved, group in zip(groups, training.optimizer.param_groups)):
        raise RunnerError(f"{checkpoint.name} was written for other trainable parameters than this run's",
                          f"delete {checkpoint} to train from the start")
    _init_optim_state(training.optimizer)  # the state tensors to read into, sharded like their parameters
    tensors, _ = _flatten(training)
    try:
        with _one_process_is_expected():
            dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(checkpoint / TENSORS)))
    except Exception as error:  # DCP reports a missing or mis-shaped tensor in many ways; the cause is one
        raise RunnerError(f"{checkpoint.name} does not hold this run's tensors: {str(error).splitlines()[0][:300]}",
                          f"delete {checkpoint} to resume from an older checkpoint, or train from the start") \
            from None
    for group, saved in zip(training.optimizer.param_groups, groups):
        group.update({key: tuple(value) if key == "betas" else value for key, value in saved.items()
                      if key != "params"})
    training.schedule.load_state_dict(state["schedule"])
    training.extra.update(state.get("extra") or {})
    rng = checkpoint / f"rng-{_rank()}.json"
    if rng.is_file():  # a process the writing run did not have keeps its seeded state
        try:
            raw = base64.b64decode(_read_json(rng)["cpu"], validate=True)
            torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise RunnerError(f"{rng} does not hold a random-number state", f"delete {checkpoint}") from None
    return state["step"]


def _flatten(training: Training) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors, by stable names (sharded tensors stay sharded), and the JSON-serialisable rest."""
    tensors = {}
    for prefix, module in training.modules.items():
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:
                tensors[f"{prefix}.{name}"] = parameter
    optimizer = training.optimizer.state_dict()
    for index, values in optimizer["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = value
    return tensors, {"param_groups": optimizer["param_groups"], "schedule": training.schedule.state_dict()}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunnerError(f"{path} cannot be read: {error}", f"delete {path.parent} to resume from an older "
                          "checkpoint") from None
    if not isinstance(value, dict):
        raise RunnerError(f"{path} is not a runner checkpoint file", f"delete {path.parent}")
    return value


@contextlib.contextmanager
def _one_process_is_expected():
    """DCP warns, on every save and load without a process group, that it assumes one process: that is
    what a single-process run means, so the warning says nothing a user could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
