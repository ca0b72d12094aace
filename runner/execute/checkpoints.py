"""Checkpoints of runner's own training loops (SFT, PPO): the trainable tensors, the optimizer,
the schedule and the random state, written to a staging folder and renamed into place.

`trainer_state.json` marks a complete checkpoint (RunDirectory.latest_checkpoint looks for
it), so a crash while writing leaves only a `.partial` folder that resuming ignores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

STATE_FILE = "state.pt"


def trainable_state(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable(module, tensors: dict[str, torch.Tensor]) -> None:
    parameters = dict(module.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)


def save(folder: Path, step: int, state: dict, keep: int) -> Path:
    target = folder / f"checkpoint-{step}"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.save({**state, "rng": torch.get_rng_state()}, staging / STATE_FILE)
    (staging / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    done = sorted((p for p in folder.glob("checkpoint-*") if not p.name.endswith(".partial")),
                  key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in done[:-keep]:
        shutil.rmtree(old)
    return target


def load(checkpoint: Path) -> tuple[int, dict]:
    state = torch.load(checkpoint / STATE_FILE, weights_only=False)
    torch.set_rng_state(state.pop("rng"))
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"], state
