"""The pre-commit hook, installed by the real `pre-commit` from this repository as a user's repo would
use it, refuses a bad layer range and a bad data row (JSONL, and CSV) in a commit, in its own
environment: no torch, no pyarrow, no model on disk (the committed runner.lock carries the model's facts)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import main
from tests.conftest import REPO
from tests.spec.test_lockfile import hub_cache

SPEC = """version: 1
name: job
method: sft
base_model: someorg/some-model
data:
  train: [data/train.jsonl, data/extra.csv]
trainable:
  mode: freeze
  layers: last:2
"""


def git(folder: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, env=env)


def hook_repository(folder: Path) -> str:
    """This working tree's package and hook definition, committed (pre-commit installs from a commit)."""
    folder.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "runner", folder / "runner", ignore=shutil.ignore_patterns("__pycache__"))
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "hook")
    return git(folder, "rev-parse", "HEAD").stdout.strip()


@pytest.mark.slow
def test_the_hook_refuses_a_bad_layer_range_and_a_bad_data_row(tmp_path, model_dir, monkeypatch):
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@example.com"}.items():
        monkeypatch.setenv(key, value)
    revision = hook_repository(tmp_path / "hook")
    project = tmp_path / "project"
    (project / "specs" / "data").mkdir(parents=True)
    git(project, "init", "-q")
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {tmp_path / 'hook'}\n    rev: {revision}\n    hooks:\n      - id: runner-validate\n")
    spec = project / "specs" / "job.yaml"
    spec.write_text(SPEC)
    data = project / "specs" / "data" / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(4)))
    csv_data = project / "specs" / "data" / "extra.csv"
    csv_data.write_text("prompt,completion\nq,a\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "cache", model_dir)))
    assert main(["lock", str(project / "specs")]) == 0  # where the model is

    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "no-models"), "PRE_COMMIT_HOME": str(tmp_path / "pc")}
    subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=project, env=env, check=True,
                   capture_output=True)
    git(project, "add", "-A")
    first = git(project, "commit", "-m", "a spec", env=env)
    assert first.returncode == 0, first.stdout + first.stderr

    spec.write_text(SPEC.replace("last:2", "last:40"))
    git(project, "add", "-A")
    refused = git(project, "commit", "-m", "too many layers", env=env)
    assert refused.returncode != 0
    assert "specs/job.yaml:9:11: error: trainable.layers: last:40 asks for 40 layers; the model has 4 (0-3)" \
        in refused.stderr, refused.stdout + refused.stderr  # git shows a hook's output on stderr
    git(project, "checkout", "--", ".")
    git(project, "reset", "-q", "--hard")

    with open(data, "a") as rows:
        rows.write('{"prompt": "q", "completion": 5}\n')
    git(project, "add", "-A")
    refused = git(project, "commit", "-m", "a broken row", env=env)
    assert refused.returncode != 0
    output = refused.stderr
    assert "specs/data/train.jsonl: checked through specs/job.yaml" in output, refused.stdout + output
    assert "specs/data/train.jsonl:5:1: error: data.train:" in output
    git(project, "reset", "-q", "--hard")

    with open(csv_data, "a") as rows:  # CSV is read without pyarrow, which the hook does not have
        rows.write('q2,""\n')
    git(project, "add", "-A")
    refused = git(project, "commit", "-m", "a broken CSV row", env=env)
    assert refused.returncode != 0
    assert 'specs/data/extra.csv:3:1: error: data.train: row index 1: "completion" is empty' in refused.stderr, \
        refused.stdout + refused.stderr

    hook_python = next(Path(env["PRE_COMMIT_HOME"]).glob("repo*/py_env-*/bin/python"))
    for heavy in ("torch", "pyarrow"):
        assert subprocess.run([hook_python, "-c", f"import {heavy}"], capture_output=True).returncode != 0
    assert subprocess.run([hook_python, "-c", "import runner.cli"], capture_output=True).returncode == 0


def test_the_hook_s_default_files_cover_specs_their_data_and_lockfiles():
    import re

    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    files = re.compile(hook["files"])
    for path in ("specs/job.yaml", "specs/a/b.yml", "specs/data/train.jsonl", "specs/data/t.parquet",
                 "specs/runner.lock", "specs/rlhf/runner.lock"):
        assert files.search(path), path
    for path in ("src/job.yaml", "specs/notes.txt", "specs/old.lock", ".pre-commit-config.yaml"):
        assert not files.search(path), path


def test_the_documented_local_hook_works_exactly_as_written(tmp_path, model_dir, monkeypatch):
    """docs/validate.md's `repo: local` config, copied as it is, with runner on the PATH (this environment's)."""
    import re

    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@example.com"}.items():
        monkeypatch.setenv(key, value)
    page = (REPO / "docs" / "validate.md").read_text()
    section = page[page.index("## As a pre-commit hook"):]
    config = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert "repo: local" in config
    project = tmp_path / "project"
    (project / "specs" / "data").mkdir(parents=True)
    git(project, "init", "-q")
    (project / ".pre-commit-config.yaml").write_text(config)
    (project / "specs" / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n')
    spec = project / "specs" / "job.yaml"
    spec.write_text(SPEC.replace("someorg/some-model", str(model_dir)).replace(
        "[data/train.jsonl, data/extra.csv]", "data/train.jsonl"))
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pc"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # where `runner` is installed
    subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=project, env=env, check=True,
                   capture_output=True)
    git(project, "add", "-A")
    first = git(project, "commit", "-m", "a spec", env=env)
    assert first.returncode == 0 and "runner validate" in first.stdout + first.stderr, first.stdout + first.stderr
    spec.write_text(spec.read_text().replace("last:2", "last:40"))
    git(project, "add", "-A")
    refused = git(project, "commit", "-m", "too many layers", env=env)
    assert refused.returncode != 0
    assert "specs/job.yaml:9:11: error: trainable.layers: last:40 asks for 40 layers; the model has 4 (0-3)" \
        in refused.stdout + refused.stderr
