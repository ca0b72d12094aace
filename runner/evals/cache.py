"""The base model's eval results, kept in runner's cache: a base is evaluated once per eval content.

The key is the base model's identity (its files' hashes, its revision) with the eval's content hash
(the plan's EvalItem.content_sha256: rows, settings, schema and task files, the scoring libraries'
versions). A run of the same base with the same eval reads the results and per-row file back instead
of evaluating the base again. Torch-free: the planner says which bases are cached.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import suppress
from pathlib import Path

from runner.fsutil import cache_directory, write_atomically
from runner.plan.models import EvalItem, ModelIdentity
from runner.readers import loads_bounded, read_regular

SUMMARY = "summary.json"
ROWS = "rows.jsonl"


def key(base: ModelIdentity, item: EvalItem) -> str:
    model = base.model_dump(mode="json", exclude={"trust_remote_code"})
    text = json.dumps({"model": model, "eval": item.content_sha256}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def folder(cache_key: str) -> Path:
    return cache_directory() / "evals" / cache_key


def read(cache_key: str) -> tuple[dict, Path] | None:
    """(the cached summary, its per-row file), or None when the base was not evaluated on this eval here."""
    place = folder(cache_key)
    try:
        summary = loads_bounded(read_regular(place / SUMMARY, 16 * 2**20))
    except (OSError, ValueError):
        return None
    rows = place / ROWS
    return (summary, rows) if isinstance(summary, dict) and rows.is_file() else None


def cached(base: ModelIdentity, item: EvalItem) -> bool:
    return read(key(base, item)) is not None


def write(cache_key: str, summary: dict, rows: Path) -> None:
    """Keep a base's results; a cache that cannot be written only costs time next run."""
    place = folder(cache_key)
    with suppress(OSError):
        place.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rows, place / f".{ROWS}.tmp")
        (place / f".{ROWS}.tmp").replace(place / ROWS)
        write_atomically(place / SUMMARY, json.dumps(summary, indent=2) + "\n")  # last: its presence means complete
