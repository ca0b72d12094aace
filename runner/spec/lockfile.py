"""runner.lock: facts about the models a folder's specs train, for checks on machines without them.

A pre-commit hook or a CI job has no model on disk, so `trainable.layers: last:40` on a 30-layer
model could only be a warning there. `runner lock` writes, beside the specs, what validate needs to
know about each model (layer count, parameter names and shapes, a few config facts) and where those
facts came from (hub id and commit, or file sha256). People commit it; validate reads it when the
model is not on the machine, and reports it stale when the model is here and differs.

Like a package lockfile: one per folder (specs in a folder share their models, and `{job: NAME}`
references already resolve within a folder), deterministic (sorted keys, no timestamps, so an
unchanged model gives an unchanged file), versioned (`lock_version`), small (a parameter repeated in
every block is one line: `model.layers.{0-29}.mlp.up_proj.weight`). Torch-free.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.fsutil import file_sha256
from runner.readers import loads_bounded, read_regular
from runner.spec.modelinfo import ModelFacts
from runner.trainable import split_at_layer

LOCK_NAME = "runner.lock"
LOCK_VERSION = 1
MAX_LOCK_BYTES = 16 * 2**20
"""A lockfile is about 40 lines per model."""
COMMENT = ("Written by `runner lock`: facts about the models the specs in this folder train, so that "
           "`runner validate` checks them where the model is not. Commit it; refresh it with `runner lock`.")
CONFIG_KEYS = ("model_type", "architectures", "num_hidden_layers", "n_layer", "num_layers", "n_layers", "hidden_size",
               "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
               "max_position_embeddings", "tie_word_embeddings")
_RANGE = re.compile(r"\{(\d+)(?:-(\d+))?\}")


class LockfileError(ValueError):
    """A runner.lock that cannot be read; the message says why."""


@dataclass(frozen=True)
class LockedModel:
    reference: str
    """The model as the specs write it: a hub id (with @revision when pinned) or a path."""
    source: dict[str, str]
    """Where the facts were read: hub id and revision, or offline copy / file and its sha256."""
    facts: ModelFacts


def lock_path(folder: Path) -> Path:
    return folder / LOCK_NAME


# --- reading ----------------------------------------------------------------------------------

def read_lock(folder: Path) -> dict[str, LockedModel]:
    """The models locked in `folder`'s runner.lock; empty when there is none."""
    path = lock_path(folder)
    if not path.is_file():
        return {}
    try:
        record = loads_bounded(read_regular(path, MAX_LOCK_BYTES))
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON, nested too deep
        raise LockfileError(f"cannot be read: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("models"), dict):
        raise LockfileError("is not a runner lockfile (no 'models')")
    version = record.get("lock_version")
    if version != LOCK_VERSION:
        raise LockfileError(f"has lock_version {version!r}; this runner reads version {LOCK_VERSION}")
    models = {}
    for reference, entry in record["models"].items():
        try:
            config = dict(entry["config"])
            if entry.get("num_layers") is not None:
                config.setdefault("num_hidden_layers", int(entry["num_layers"]))
            facts = ModelFacts(f"{reference} ({LOCK_NAME})", config, expand(entry["parameters"]),
                               dict(entry.get("tied", {})))
            models[reference] = LockedModel(reference, dict(entry["source"]), facts)
        except (KeyError, TypeError, ValueError) as error:
            raise LockfileError(f"has a broken entry for {reference}: {error}") from None
    return models


def expand(parameters: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
    """`model.layers.{0-2}.x` -> model.layers.0.x, model.layers.1.x, model.layers.2.x."""
    shapes = {}
    for pattern, shape in parameters.items():
        match = _RANGE.search(pattern)
        if match is None:
            shapes[pattern] = tuple(shape)
            continue
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        for index in range(first, last + 1):
            shapes[pattern[:match.start()] + str(index) + pattern[match.end():]] = tuple(shape)
    return shapes


def stale_reasons(locked: LockedModel, here: ModelFacts, identity_here: dict[str, str]) -> list[str]:
    """How the locked facts differ from the model on this machine (empty: they agree)."""
    reasons = []
    for key, what in (("revision", "revision"), ("sha256", "sha256")):
        before, now = locked.source.get(key), identity_here.get(key)
        if before and now and before != now:
            reasons.append(f"it was written from {what} {before[:12]}; this machine has {now[:12]}")
    if locked.facts.num_layers != here.num_layers:
        reasons.append(f"it says {locked.facts.num_layers} layers; the model here has {here.num_layers}")
    elif here.shapes and locked.facts.shapes != here.shapes:
        differing = sorted(set(locked.facts.shapes.items()) ^ set(here.shapes.items()))
        reasons.append(f"{len({name for name, _ in differing})} parameter name(s) or shape(s) differ, "
                       f"like {differing[0][0]}")
    return reasons


# --- writing ----------------------------------------------------------------------------------

def identity_of(source, facts: ModelFacts) -> dict[str, str]:
    """What identifies the model the facts were read from: a hub snapshot folder is named by its commit;
    a single file (GGUF) by its sha256."""
    read_from = Path(facts.source)
    identity = {"hub": source.hub} if source.hub else {"path": source.path}
    if read_from.is_file():
        if source.hub:
            identity["offline_copy"] = read_from.name
        identity["sha256"] = file_sha256(read_from)
    elif source.hub:
        identity["revision"] = read_from.name
    return identity


def entry(source, facts: ModelFacts) -> dict[str, Any]:
    return {
        "source": identity_of(source, facts),
        "num_layers": facts.num_layers,
        "config": {key: facts.config[key] for key in CONFIG_KEYS if facts.config.get(key) is not None},
        "parameters": compress(facts.shapes),
        "parameter_count": sum(math.prod(shape) for shape in facts.shapes.values()),
        "tied": dict(facts.tied),
        **({"notes": list(facts.notes)} if facts.notes else {}),
    }


def compress(shapes: dict[str, tuple[int, ...]]) -> dict[str, list[int]]:
    """One line for a parameter repeated with one shape over consecutive blocks."""
    runs: dict[tuple[str, str, tuple[int, ...]], list[int]] = {}
    compressed: dict[str, list[int]] = {}
    for name, shape in shapes.items():
        parts = split_at_layer(name)
        if parts is None:
            compressed[name] = list(shape)
        else:
            runs.setdefault((parts[0], parts[2], tuple(shape)), []).append(parts[1])
    for (prefix, suffix, shape), indices in runs.items():
        for first, last in _ranges(sorted(indices)):
            span = f"{first}-{last}" if last > first else f"{first}"
            compressed[f"{prefix}{{{span}}}{suffix}"] = list(shape)
    return compressed


def _ranges(indices: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for index in indices:
        if spans and index == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], index)
        else:
            spans.append((index, index))
    return spans


def render(models: dict[str, dict[str, Any]]) -> str:
    """The lockfile's text: JSON, keys sorted, a list of numbers on one line (a shape reads [576, 576])."""
    return _render({"comment": COMMENT, "lock_version": LOCK_VERSION, "models": models}, 0) + "\n"


def _render(value: Any, depth: int) -> str:
    if isinstance(value, dict) and value:
        pad = "  " * (depth + 1)
        items = [f"{pad}{json.dumps(key)}: {_render(item, depth + 1)}" for key, item in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        pad = "  " * (depth + 1)
        return "[\n" + ",\n".join(pad + _render(item, depth + 1) for item in value) + "\n" + "  " * depth + "]"
    return json.dumps(value, ensure_ascii=False)
