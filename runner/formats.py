"""Data row shapes: detection and per-row checks, shared by the validator, planner and executor.

Formats (one per file; every row is checked):
- `messages`: OpenAI chat, `{"messages": [{"role", "content", "weight"?}, ...]}`
- `prompt_completion`: `{"prompt", "completion"}`, as text or as message lists
- `text`: `{"text"}`, trained on every token
- `preference`: `{"prompt"?, "chosen", "rejected"}` (text or message lists), or OpenAI's DPO
  shape `{"input": {"messages"}, "preferred_output", "non_preferred_output"}`
- `prompt_only`: `{"prompt"}`, for reinforcement learning
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runner.readers import loads_bounded, open_regular

FORMATS = ("messages", "prompt_completion", "text", "preference", "prompt_only")
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_ROW_BYTES = 16 * 2**20
"""A row longer than this is rejected (and skipped without being held in memory)."""

FORMATS_FOR_METHOD: dict[str, tuple[str, ...]] = {
    "sft": ("messages", "prompt_completion", "text"),
    "dpo": ("preference",),
    "reward": ("preference",),
    # RL needs prompts only; rows that also carry answers give their prompt.
    "ppo": ("prompt_only", "prompt_completion", "messages", "preference"),
    "grpo": ("prompt_only", "prompt_completion", "messages", "preference"),
}


class RowError(ValueError):
    """Why one row cannot be used."""


def detect(row: Any) -> str:
    """The format of one parsed JSON row; RowError if it has none."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, not {_json_type(row)}")
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if {"input", "preferred_output", "non_preferred_output"} <= keys:
        return "preference"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    if "prompt" in keys:
        return "prompt_only"
    shown = ", ".join(sorted(keys)[:8]) or "none"
    raise RowError(
        f"no known row shape (keys: {shown}); expected messages, prompt+completion, text, "
        "prompt+chosen+rejected, input+preferred_output+non_preferred_output, or prompt")


def variant(row: dict) -> str:
    """`openai` for OpenAI's DPO shape, `conversational` for message lists, else `standard`."""
    if "preferred_output" in row:
        return "openai"
    if "messages" in row:
        return "conversational"
    for key in ("prompt", "completion", "chosen"):
        if isinstance(row.get(key), list):
            return "conversational"
    return "standard"


def check(row: dict, format_name: str) -> None:
    """Raise RowError if `row` (already detected as `format_name`) is not usable."""
    _CHECKS[format_name](row)


def read_rows(path: Path, format_name: str | None) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line, row, problem) for every non-blank line of a JSONL file; `problem` says why a row cannot
    be used. Rows must all be `format_name`; when it is None, the first usable row decides it.
    Only a regular file is read (an OSError otherwise), a line at a time in bounded memory: a row
    longer than MAX_ROW_BYTES, or nested deeper than MAX_JSON_DEPTH, is a bad row, not a crash."""
    expected = format_name
    with open_regular(path) as handle:
        for line, raw in enumerate(_lines(handle), start=1):
            if raw is None:
                yield line, None, f"the row is longer than {MAX_ROW_BYTES // 2**20} MiB"
                continue
            if not raw.strip():
                continue
            try:
                row = loads_bounded(raw)
                found = detect(row)
                if expected is not None and found != expected:
                    raise RowError(f"row is {found}, but the file is {expected}")
                check(row, found)
            except (ValueError, RowError) as error:
                problem = str(error) if isinstance(error, RowError) else f"not valid JSON: {error}"
                yield line, None, problem
                continue
            expected = found
            yield line, row, None


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """Each line of a file, or None for one longer than MAX_ROW_BYTES (skipped, never held whole)."""
    while True:
        raw = handle.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            while chunk := handle.read(1 << 20):  # the rest of the line, a megabyte at a time
                newline = chunk.find(b"\n")
                if newline >= 0:
                    handle.seek(newline + 1 - len(chunk), os.SEEK_CUR)
                    break
            yield None
            continue
        yield raw


def _check_messages(row: dict) -> None:
    messages = _messages(row["messages"], "messages")
    trained = [m for m in messages if m["role"] == "assistant" and m.get("weight", 1) == 1]
    if not trained:
        raise RowError("no assistant message to train on (each row needs one with weight 1 or no weight)")


def _check_prompt_completion(row: dict) -> None:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        _messages(prompt, "prompt")
        _messages(completion, "completion")
        return
    _text(prompt, "prompt", allow_empty=True)
    _text(completion, "completion")


def _check_text(row: dict) -> None:
    _text(row["text"], "text")


def _check_preference(row: dict) -> None:
    if "preferred_output" in row:
        source = row["input"]
        if not isinstance(source, dict) or "messages" not in source:
            raise RowError('"input" must be an object with "messages"')
        _messages(source["messages"], "input.messages")
        for key in ("preferred_output", "non_preferred_output"):
            answer = _messages(row[key], key)
            if answer[-1]["role"] != "assistant":
                raise RowError(f'"{key}" must end with an assistant message')
        return
    conversational = any(isinstance(row.get(k), list) for k in ("prompt", "chosen", "rejected"))
    for key in ("chosen", "rejected"):
        if conversational:
            _messages(row[key], key)
        else:
            _text(row[key], key)
    if "prompt" in row:
        if conversational:
            _messages(row["prompt"], "prompt")
        else:
            _text(row["prompt"], "prompt", allow_empty=True)
    if row["chosen"] == row["rejected"]:
        raise RowError('"chosen" and "rejected" are identical: the pair teaches nothing')


def _check_prompt_only(row: dict) -> None:
    if isinstance(row["prompt"], list):
        _messages(row["prompt"], "prompt")
    else:
        _text(row["prompt"], "prompt")


_CHECKS = {
    "messages": _check_messages,
    "prompt_completion": _check_prompt_completion,
    "text": _check_text,
    "preference": _check_preference,
    "prompt_only": _check_prompt_only,
}


def _text(value: Any, key: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise RowError(f'"{key}" must be a string, not {_json_type(value)}')
    if not allow_empty and not value.strip():
        raise RowError(f'"{key}" is empty')


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(f'"{key}" must be a non-empty list of messages')
    for index, message in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise RowError(f"{where} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            raise RowError(f"{where} has no content")
        if content is not None and not _is_content(content):
            raise RowError(f"{where}.content must be a string or a list of text parts")
        if "weight" in message:
            if role != "assistant":
                raise RowError(f"{where} has a weight; only assistant messages take one")
            if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
                raise RowError(f"{where}.weight is {message['weight']!r}; it must be 0 or 1")
    return value


def _is_content(content: Any) -> bool:
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
