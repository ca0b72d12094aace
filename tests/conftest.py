"""The tests' fixtures: model folders, data and spec writers, a Slurm cluster when one is up. Everything else they
share is in tests/helpers.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import (REWARDS, fake_run, llama_shapes, slurm_missing, spec_writer, write_jsonl,
                           write_safetensors_header)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A local model folder with 4 llama-style layers and tied embeddings (headers only)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 8, "tie_word_embeddings": True}))
    write_safetensors_header(folder / "model.safetensors", llama_shapes())
    return folder


@pytest.fixture
def project(tmp_path: Path, model_dir: Path):
    """A folder with prompt/completion data and a helper that writes a spec into it."""
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(8)])
    return spec_writer(tmp_path)


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


@pytest.fixture
def prompts(tmp_path):
    write_jsonl(tmp_path / "data" / "prompts.jsonl", [{"prompt": f"What is your name? {i}"} for i in range(8)])
    (tmp_path / "scoring.py").write_text(REWARDS)


@pytest.fixture
def root(tmp_path):
    fake_run(tmp_path, "tiny", "20260101-000001-aaaa", "succeeded", finished="2026-01-01T00:05:00+00:00")
    fake_run(tmp_path, "tiny", "20260101-000002-bbbb", "succeeded", finished="2026-01-01T00:09:00+00:00")
    fake_run(tmp_path, "tiny", "20260101-000003-cccc", "failed")
    fake_run(tmp_path, "other", "20260101-000004-dddd", "running")
    (tmp_path / ".venv" / "x" / "y").mkdir(parents=True)
    (tmp_path / ".venv" / "x" / "y" / "manifest.json").write_text('{"name": "hidden"}')
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "manifest.json").write_text("{half")
    return tmp_path
