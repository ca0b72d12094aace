"""What the tests share besides fixtures (those are in conftest.py): paths, spec texts, data and model files
written by the tests themselves, the machines plans are made for, and running a spec end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from runner.plan.machine import Machine

REPO = Path(__file__).resolve().parent.parent


TRAINING_STACK = ("torch", "transformers", "trl", "peft")


def assert_imports_none_of(code: str, heavy: tuple[str, ...] = TRAINING_STACK) -> None:
    """Run `code` in a fresh interpreter (from the repository) and fail if it leaves any of `heavy` imported:
    the torch-free layers stay free of the training stack and of the optional extras."""
    check = f"{code}\nimport sys\nfound = [m for m in {heavy!r} if m in sys.modules]\nassert not found, found\n"
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == 0, completed.stderr


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def finished_checkpoints(runs: Path) -> list[Path]:
    """The checkpoints under a run root's run folders that are complete: written and renamed into place (a
    `checkpoint-N.partial` folder holds its done-file for a moment before it is renamed)."""
    return [done.parent for done in runs.glob("*/checkpoints/checkpoint-*/trainer_state.json")
            if not done.parent.name.endswith(".partial")]


def write_safetensors_header(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A safetensors file whose header names these tensors (the data is never read by validate)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def llama_shapes(layers: int = 4, hidden: int = 8, vocab: int = 32, tied: bool = True) -> dict:
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes.update({
            prefix + "input_layernorm.weight": (hidden,), prefix + "post_attention_layernorm.weight": (hidden,),
            **{prefix + f"self_attn.{p}_proj.weight": (hidden, hidden) for p in "qkvo"},
            **{prefix + f"mlp.{p}_proj.weight": (2 * hidden, hidden) for p in ("gate", "up")},
            prefix + "mlp.down_proj.weight": (hidden, 2 * hidden),
        })
    if not tied:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def spec_writer(folder: Path):
    """A helper that writes a spec (dedented) into `folder` and returns its path."""

    def write_spec(text: str, name: str = "job.yaml") -> Path:
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write_spec


BASE_SPEC = """
version: 1
name: tiny
method: sft
base_model: ./tiny-model
data:
  train: data/train.jsonl
"""


TINY_SPEC = """
version: 1
name: tiny
method: sft
base_model: ./model
data:
  train: data/train.jsonl
"""


def slurm_missing() -> str | None:
    """Why no Slurm cluster can take jobs here, or None when one can: sbatch is on the PATH and a node is
    ready (scripts/slurm-up's test of the same)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no Slurm cluster: sbatch and sinfo are not installed"
    try:
        listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no Slurm cluster: sinfo did not answer within 30 s"
    states = listed.stdout.split()
    if listed.returncode != 0 or not any(state in READY_NODE_STATES for state in states):
        return f"no Slurm cluster: no node is ready (sinfo: {(listed.stdout + listed.stderr).strip()[:300]!r})"
    return None


READY_NODE_STATES = {"idle", "mixed", "allocated", "completing"}
"""sinfo's node states that take jobs (a trailing * or ~ means the node does not answer or is off)."""


# --- plans and runs of the tiny model -------------------------------------------------------------------

CPU = Machine(cuda_devices=0, cuda_names=(), cuda_memory_bytes=0, cuda_bf16=False, ram_available_bytes=16 << 30)
TWO_GPUS = Machine(cuda_devices=2, cuda_names=("H100", "H100"), cuda_memory_bytes=80 << 30, cuda_bf16=True,
                   ram_available_bytes=64 << 30)


def plan_of(write_spec, extra: str = "", machine=CPU, **replacements):
    text = TINY_SPEC
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = write_spec(text + extra)
    from runner.plan.planner import make_plan

    return make_plan(path, run_root=path.parent, machine=machine)


FAST = "training:\n  max_steps: 4\n  batch_size: 4\n  learning_rate: 1.0e-3\n"


def run_spec(write_spec, extra="", *, machine=CPU, **replacements):
    text = TINY_SPEC
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = write_spec(text + extra)
    from runner.execute.job import run_plan
    from runner.plan.planner import make_plan
    from runner.rundir import RunDirectory

    plan = make_plan(path, run_root=path.parent, machine=machine)
    code, run_dir = run_plan(plan, run_root=path.parent, spec_text=path.read_text(), console=False)
    run = RunDirectory(run_dir)
    return code, run, run.read_manifest()


def layers_of(names):
    return {name.split(".")[2] for name in names if name.startswith("model.layers.")}


def sigterm_at_sft_step(monkeypatch, step: int):
    """SIGTERM to this process as the SFT loop starts `step`; returns the undo."""
    from runner.methods import sft

    original, calls = sft.step_micro_batches, []

    def signalling(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(sft, "step_micro_batches", signalling)
    return lambda: monkeypatch.setattr(sft, "step_micro_batches", original)


REWARDS = "def score(prompts, completions):\n    return [float(len(c)) / 10 for c in completions]\n"
QUICK_RL = "training:\n  max_steps: 2\n  batch_size: 8\n  learning_rate: 1.0e-3\n"
"""A PPO or GRPO job of two steps."""
ADDITIONS = [{"prompt": f"What is {i} + 1?", "answer": i + 1, "space": " "} for i in range(8)]
"""Prompt rows whose answer is a column of its own, for declared rewards."""
QUICK_GRPO = "training:\n  max_steps: 2\n  batch_size: 8\n  learning_rate: 1.0e-2\n"


# --- files other parts of runner read ---------------------------------------------------------------------

def hub_cache(root, model_dir, commit="abc123"):
    """A hub cache holding `model_dir` as someorg/some-model at `commit`."""
    repo = root / "models--someorg--some-model"
    (repo / "snapshots").mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return root


def fake_run(root, name, run_id, state, *, steps=4, loss=0.5, finished="2026-01-01T00:10:00+00:00"):
    """A run folder with the manifest fields that finding and listing read (a real run writes more)."""
    folder = root / "runs" / name / run_id
    (folder / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-2" / "manifest.json").write_text("{}")  # never taken for a run
    (folder / "manifest.json").write_text(json.dumps({
        "name": name, "run_id": run_id, "method": "sft", "state": state,
        "metrics": {"steps": steps, "train_loss": loss}, "timings": {"started_at": f"2026-01-01T00:0{run_id[-1]}:00+00:00"},
        "finished_at": finished if state != "running" else None,
        "error": {"message": "boom"} if state == "failed" else None}))
    (folder / "model.bin").write_bytes(b"x" * 1000)
    return folder
