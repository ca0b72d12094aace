"""Specs that name other specs: `base_model: {job: NAME}` finds the spec called NAME beside it."""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import RunnerError
from runner.readers import read_regular

SPEC_SUFFIXES = (".yaml", ".yml")
MAX_SPEC_BYTES = 1024 * 1024
_LOOKS_LIKE_SPEC = re.compile(r"^(version|method)\s*:", re.MULTILINE)
_NAME_LINE = re.compile(r"""^name:\s*["']?([a-z0-9][a-z0-9-]*)["']?\s*(?:#.*)?$""", re.MULTILINE)


def looks_like_spec(text: str) -> bool:
    """A YAML file is taken for a spec when it has a top-level `version:` or `method:` key."""
    return bool(_LOOKS_LIKE_SPEC.search(text))


def spec_name(path: Path) -> str | None:
    """The `name:` of a spec file, read without parsing the whole file (a FIFO, a device or an
    oversized file beside the spec is not a spec: it has no name)."""
    try:
        match = _NAME_LINE.search(read_regular(path, MAX_SPEC_BYTES).decode("utf-8", errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def find_job_spec(folder: Path, name: str) -> Path:
    """The one spec in `folder` whose name is `name`."""
    found = sorted(path for suffix in SPEC_SUFFIXES for path in folder.glob(f"*{suffix}")
                   if spec_name(path) == name)
    if not found:
        raise RunnerError(f"no spec named '{name}' in {folder}",
                          hint="a {job: NAME} reference names another spec in the same folder")
    if len(found) > 1:
        raise RunnerError(f"{len(found)} specs are named '{name}' in {folder}: "
                          + ", ".join(path.name for path in found),
                          hint="give each spec in a folder its own name")
    return found[0]


def jobs_named(spec) -> list[str]:
    """The other specs a (valid) spec builds on: `{job: NAME}` as its base model, reward model or teacher."""
    reward = spec.reward_source()
    models = [spec.base_model, reward.model if reward is not None else None, spec.teacher_source()]
    return [model.job for model in models if model is not None and model.job]
