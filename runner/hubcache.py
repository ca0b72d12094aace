"""The local Hugging Face hub cache, for models and datasets alike: read, never downloaded into.

The layout is huggingface_hub's: `<cache>/<type>s--ORG--NAME/refs/<branch>` holds a commit, and
`snapshots/<commit>/` the repository's files at it. The cache is `$HF_HUB_CACHE`, else
`$HF_HOME/hub`, else `~/.cache/huggingface/hub`. No huggingface_hub import: validate stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from runner.readers import read_regular

RepoType = Literal["model", "dataset"]


def cache_root() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"))


def repository_folder(repo_id: str, repo_type: RepoType = "model") -> Path:
    return cache_root() / f"{repo_type}s--{repo_id.replace('/', '--')}"


def snapshot(repo_id: str, revision: str | None, repo_type: RepoType = "model") -> Path | None:
    """The snapshot folder of a repository at `revision` (a branch, tag or commit; default main), if cached."""
    repository = repository_folder(repo_id, repo_type)
    reference = revision or "main"
    try:
        commit = read_regular(repository / "refs" / reference, 4096).decode("utf-8", errors="replace").strip()
    except OSError:
        commit = reference
    folder = repository / "snapshots" / commit
    return folder if commit and folder.is_dir() else None
