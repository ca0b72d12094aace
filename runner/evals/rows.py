"""A test set's rows (a prompt and a reference), and the prompts they share with the training data.

Rows are read through the data sources (runner.data), as training rows are: JSONL, CSV, parquet,
folders and hub datasets in the local cache. Torch-free: validate checks every row here, the planner
counts them, the run reads them.

Overlap is found by row hash: each training row's prompts (a prompt, or every user turn of a
conversation) are hashed as written (stripped) and normalised (lowercase, words only). A test prompt
whose hash as written is a training prompt's is a leak, and the spec is refused; one that matches
only once normalised is a near-duplicate, and validate warns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runner import formats
from runner.data.files import RowAt
from runner.data.sources import RowSource
from runner.evals.metrics import reference_problem

_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class EvalRow:
    at: RowAt
    prompt: str | list
    """Text, or a list of messages (rendered through the chat template when the model has one)."""
    reference: Any = None
    """Text, a number, or a list of acceptable texts; None when the row has none."""


def read(source: RowSource, needs_reference: bool, limit: int | None = None
         ) -> Iterator[tuple[RowAt, EvalRow | None, str | None]]:
    """(where, row, problem) for the first `limit` rows of a test set."""
    count = 0
    for record in source.records():
        if limit is not None and count >= limit:
            return
        count += 1
        if record.problem is not None:
            yield record.at, None, record.problem
            continue
        try:
            yield record.at, _row(record.at, record.value, needs_reference), None
        except formats.RowError as error:
            yield record.at, None, str(error)


def _row(at: RowAt, value: Any, needs_reference: bool) -> EvalRow:
    if not isinstance(value, dict):
        raise formats.RowError("a row must be an object with a prompt and a reference")
    if "prompt" not in value:
        raise formats.RowError(f'no "prompt" (a test set row has "prompt" and "reference"; keys: '
                               f'{", ".join(sorted(value)[:8]) or "none"})')
    prompt = value["prompt"]
    if isinstance(prompt, list):
        formats.detect_as({"prompt": prompt}, "prompt_only")
        formats.check({"prompt": prompt}, "prompt_only")
    elif not isinstance(prompt, str) or not prompt.strip():
        raise formats.RowError('"prompt" must be text or a list of messages')
    reference = value.get("reference")
    if reference is None and "completion" in value:
        reference = _completion_text(value["completion"])
    if reference is None:
        if needs_reference:
            raise formats.RowError('no "reference" (or "completion"): the metrics compare the answer with it')
        return EvalRow(at, prompt)
    problem = reference_problem(reference)
    if problem:
        raise formats.RowError(problem)
    return EvalRow(at, prompt, reference)


def _completion_text(completion: Any) -> Any:
    """A completion as a reference: its text, or the content of its last message."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else None
    return completion


def prompt_text(prompt: str | list) -> str:
    """What a prompt asks: the text, or the last user turn of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return next((text for text in reversed(users) if isinstance(text, str)), "")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).digest()[:12]


def exact_key(text: str) -> bytes:
    return _digest(text.strip())


def near_key(text: str) -> bytes:
    return _digest(" ".join(_WORDS.findall(text.lower())))


def training_prompts(row: dict) -> list[str]:
    """The prompts a training row teaches answers to: its prompt (text, or the user turns of a message
    list), or the user turns of a conversation; a text row has none."""
    found = []
    for value in (row.get("prompt"), row.get("messages"), (row.get("input") or {}).get("messages")
                  if isinstance(row.get("input"), dict) else None):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found += [m["content"] for m in value if isinstance(m, dict) and m.get("role") == "user"
                      and isinstance(m.get("content"), str)]
    return found


@dataclass
class TrainingPrompts:
    """The hashes of every training prompt, collected while validate reads the training rows."""

    exact: set[bytes] = field(default_factory=set)
    near: set[bytes] = field(default_factory=set)

    def add(self, row: dict) -> None:
        for text in training_prompts(row):
            self.exact.add(exact_key(text))
            self.near.add(near_key(text))

    def overlap(self, prompt: str | list) -> str | None:
        """`exact` when a training prompt is this one as written, `near` when only once normalised."""
        text = prompt_text(prompt)
        if exact_key(text) in self.exact:
            return "exact"
        if near_key(text) in self.near:
            return "near"
        return None
