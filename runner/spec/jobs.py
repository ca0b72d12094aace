"""Specs that name other specs: `base_model: {job: NAME}` finds the spec called NAME beside it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.readers import read_regular

SPEC_SUFFIXES = (".yaml", ".yml")
MAX_SPEC_BYTES = 1024 * 1024
_LOOKS_LIKE_SPEC = re.compile(r"^(version|method)\s*:", re.MULTILINE)


def looks_like_spec(text: str) -> bool:
    """A YAML file is taken for a spec when it has a top-level `version:` or `method:` key."""
    return bool(_LOOKS_LIKE_SPEC.search(text))


def spec_name(path: Path) -> str | None:
    """The `name:` of a spec file: a YAML mapping with `version` and `method` (parsed by the spec's own
    bounded loader: a CI file's `name:` line is no spec's name, and a FIFO, a device or an oversized file
    beside the spec has none)."""
    data = _spec_data(path)
    name = data.get("name") if data is not None else None
    return name if isinstance(name, str) else None


def _spec_data(path: Path) -> dict | None:
    from runner.spec.yamlpos import load_yaml  # yamlpos reads MAX_SPEC_BYTES from here

    document, _ = load_yaml(path)
    data = document.data if document is not None else None
    return data if isinstance(data, dict) and "version" in data and "method" in data else None


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


def job_references(data: Any) -> list[tuple[tuple, str]]:
    """Every `{job: NAME}` in a spec's plain data (its base model, a reward model, a teacher, ...), with
    where it is: ((field path), NAME). Whatever section a model source is in, it is found."""
    found, stack = [], [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("job"), str):
                found.append((path, value["job"]))
            stack.extend(((*path, key), item) for key, item in value.items() if isinstance(item, (dict, list)))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return sorted(found)


def jobs_named(spec) -> list[str]:
    """The other specs a (valid) spec builds on."""
    return list(dict.fromkeys(name for _, name in job_references(spec.model_dump(mode="json"))))


def cycle_through(folder: Path, name: str, first: str) -> list[str] | None:
    """The chain of `{job:}` references from the spec called `name` through `first` back to `name`, if
    there is one (each spec in `folder` read once): `a -> b -> a` would wait for itself forever."""
    parents: dict[str, str] = {first: name}
    pending = [first]
    while pending:
        current = pending.pop()
        if current == name:
            return _chain(parents, name)
        try:
            data = _spec_data(find_job_spec(folder, current))
        except RunnerError:  # missing or ambiguous: said where it is named
            continue
        for _, referenced in job_references(data or {}):
            if referenced not in parents:
                parents[referenced] = current
                pending.append(referenced)
    return None


def _chain(parents: dict[str, str], name: str) -> list[str]:
    """name -> ... -> name, from each spec's referrer back to the start."""
    chain, current = [name], name
    while True:
        current = parents[current]
        chain.append(current)
        if current == name:
            return list(reversed(chain))
