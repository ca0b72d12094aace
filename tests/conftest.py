"""Shared fixtures: spec files, data files and model folders written by the tests themselves."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A local model folder with 4 llama-style layers and tied embeddings (headers only)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 8, "tie_word_embeddings": True}))
    write_safetensors_header(folder / "model.safetensors", llama_shapes())
    return folder


def spec_writer(folder: Path):
    """A helper that writes a spec (dedented) into `folder` and returns its path."""

    def write_spec(text: str, name: str = "job.yaml") -> Path:
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write_spec


@pytest.fixture
def project(tmp_path: Path, model_dir: Path):
    """A folder with prompt/completion data and a helper that writes a spec into it."""
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(8)])
    return spec_writer(tmp_path)


BASE_SPEC = """
version: 1
name: tiny
method: sft
base_model: ./tiny-model
data:
  train: data/train.jsonl
"""


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 4-block Llama (hidden 32, tied embeddings) with a BPE tokenizer and a chat template."""
    from tests.tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_project(tmp_path: Path, tiny_model_dir: Path):
    """A folder with the tiny model linked in, data, and a spec writer (like `project`)."""
    (tmp_path / "model").symlink_to(tiny_model_dir)
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"What is your name? {i}", "completion": f"My name is Chatty {i}."} for i in range(16)])
    return spec_writer(tmp_path)


TINY_SPEC = """
version: 1
name: tiny
method: sft
base_model: ./model
data:
  train: data/train.jsonl
"""


@pytest.fixture(scope="session")
def cluster():
    """A Slurm cluster that is up on this machine (scripts/slurm-up starts a one-node one; CI runs it before
    the tests). The tests never start one themselves: the README's test command installs no system package
    and leaves no service behind. Without one the Slurm tests skip, unless RUNNER_REQUIRE_SLURM=1 (CI's
    setting): then they fail, so a cluster that did not come up is never a green run."""
    reason = slurm_missing()
    if reason:
        if os.environ.get("RUNNER_REQUIRE_SLURM") == "1":
            pytest.fail(f"RUNNER_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(f"{reason} (sudo bash scripts/slurm-up starts a one-node cluster on this machine)")


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
