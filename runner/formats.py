"""Data row shapes: detection and per-row checks, shared by the validator, planner and executor.

Formats (one per file; every row is checked):
- `messages`: OpenAI chat, `{"messages": [{"role", "content", "weight"?}, ...]}`
- `prompt_completion`: `{"prompt", "completion"}`, as text or as message lists
- `text`: `{"text"}`, trained on every token
- `preference`: `{"prompt"?, "chosen", "rejected"}` (text or message lists), or OpenAI's DPO
  shape `{"input": {"messages"}, "preferred_output", "non_preferred_output"}`
- `unpaired`: `{"prompt", "completion", "label": true | false}`, one answer marked desirable or not (KTO)
- `prompt_only`: `{"prompt"}`, for reinforcement learning

Which methods take which formats is each method's descriptor's business (runner.methods.registry).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from runner.confine import quoted

FORMATS = ("messages", "prompt_completion", "text", "preference", "unpaired", "prompt_only")
ROLES = ("system", "developer", "user", "assistant", "tool")

SHAPES: dict[str, tuple[tuple[str, ...], ...]] = {
    "messages": (("messages",),),
    "prompt_completion": (("prompt", "completion"),),
    "text": (("text",),),
    "preference": (("chosen", "rejected"), ("input", "preferred_output", "non_preferred_output")),
    "unpaired": (("prompt", "completion", "label"),),
    "prompt_only": (("prompt",),),
}
"""The keys each format's rows must have (preference: either shape); `prompt` is optional for pairs."""
KNOWN_KEYS = frozenset().union(*(keys for shapes in SHAPES.values() for keys in shapes))


class RowError(ValueError):
    """Why one row cannot be used."""


def detect(row: Any) -> str:
    """The format of one parsed JSON row; RowError if it has none."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, not {_json_type(row)}")
    keys = set(row)
    for key in sorted(keys - KNOWN_KEYS):
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.8)
        if close and close[0] not in keys:
            raise RowError(f'unexpected key {quoted(_quote(key))}: did you mean "{close[0]}"?')
    if "messages" in keys:
        return "messages"
    if {"input", "preferred_output", "non_preferred_output"} <= keys:
        return "preference"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion", "label"} <= keys:
        return "unpaired"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    if "prompt" in keys:
        return "prompt_only"
    shown = quoted(", ".join(sorted(keys)[:8])) if keys else "none"
    raise RowError(
        f"no known row shape (keys: {shown}); expected messages, prompt+completion, text, "
        "prompt+chosen+rejected, input+preferred_output+non_preferred_output, prompt+completion+label, or prompt")


def detect_as(row: Any, expected: str) -> None:
    """Raise RowError, naming the keys that are missing or in the way, unless `row` is an `expected` row."""
    try:
        found = detect(row)
    except RowError:
        if not isinstance(row, dict):
            raise
        found = None
    if found == expected:
        return
    keys = set(row)
    needed = min(SHAPES[expected], key=lambda shape: len(set(shape) - keys))
    missing = [key for key in needed if key not in keys]
    problems = []
    if found is not None:
        other = [key for key in next(shape for shape in SHAPES[found] if set(shape) <= keys) if key not in needed]
        if other:
            problems.append(f"row is {found} (it has {_keys(other)}), but the file is {expected}")
    if missing:
        problems.append(f"missing {_keys(missing)} ({expected} rows have {_keys(list(needed))})")
        for key in sorted(keys - KNOWN_KEYS):
            close = difflib.get_close_matches(key, missing, n=1, cutoff=0.6)
            problems.append(f'unexpected {quoted(_quote(key))}' + (f': did you mean "{close[0]}"?' if close else ""))
    raise RowError("; ".join(problems))


def _keys(names: list[str]) -> str:
    """Known keys (runner's own words, never the file's), quoted and listed."""
    shown = [_quote(name) for name in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _quote(name: str) -> str:
    return f'"{name}"'


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


def checked(records: Iterable[tuple[Any, Any, str | None]], format_name: str | None
            ) -> Iterator[tuple[Any, dict | None, str | None]]:
    """(where, row, problem) for each (where, value, problem) read from a source: `problem` says why a
    row cannot be used. Rows must all be `format_name`; when it is None, the first usable row decides."""
    expected = format_name
    for at, value, problem in records:
        if problem is None:
            try:
                if expected is not None:
                    detect_as(value, expected)
                found = expected or detect(value)
                check(value, found)
            except RowError as error:
                problem = str(error)
            else:
                expected = found
                yield at, value, None
                continue
        yield at, None, problem


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


def _check_unpaired(row: dict) -> None:
    _check_prompt_completion(row)
    if not isinstance(row["label"], bool):
        raise RowError(f'"label" must be true (a desirable answer) or false, not {_json_type(row["label"])}')


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
    "unpaired": _check_unpaired,
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
            raise RowError(f"{where}.role is {quoted(repr(role))}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            raise RowError(f"{where} has no content")
        if content is not None and not _is_content(content):
            raise RowError(f"{where}.content must be a string or a list of text parts")
        if "weight" in message:
            if role != "assistant":
                raise RowError(f"{where} has a weight; only assistant messages take one")
            if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
                raise RowError(f"{where}.weight is {quoted(repr(message['weight']))}; it must be 0 or 1")
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
