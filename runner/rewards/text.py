"""What a check reads of a completion: cleaned, bounded text, and the parts of it an answer is taken from.

Every function here runs in time linear in its input, and its input is at most MAX_TEXT characters:
completions come from a model, and a model can write anything (a number of 60,000 digits, an unclosed
tag, bytes that are not UTF-8).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_TEXT = 65_536
"""Characters of a completion that checks read; the rest is ignored (a completion is rarely a tenth of it)."""
MAX_NUMBER = 100
"""Characters of a number; a longer run of digits is no answer."""

NORMALIZE_STEPS = ("strip", "lower", "collapse_whitespace", "strip_punctuation")

# One alternative per shape, each taking a distinct first character class: linear, without backtracking
# between the alternatives (thousands separators, decimals, an exponent).
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})


def clean(value: Any) -> str:
    """A completion as checks read it: text at most MAX_TEXT characters long, bytes decoded as UTF-8 with
    bad bytes replaced, lone surrogates replaced (no encoder can write them), a chat completion's last
    message content."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # a conversational completion
        value = value[-1].get("content", "")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:MAX_TEXT * 4]).decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = "" if value is None else str(value)
    return value[:MAX_TEXT].encode("utf-8", "replace").decode("utf-8")


def tagged(text: str, tag: str) -> str | None:
    """The content of the last `<tag>...</tag>`, or None when there is none."""
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    opening = text.rfind(f"<{tag}>", 0, close)
    return None if opening < 0 else text[opening + len(tag) + 2:close]


def after(text: str, marker: str) -> str | None:
    """The rest of the line after the last `marker`, stripped, or None when the marker is not there."""
    found = text.rfind(marker)
    if found < 0:
        return None
    return text[found + len(marker):].split("\n", 1)[0].strip()


def answer(text: str, tag: str | None, marker: str | None) -> str | None:
    """The part of a completion a check compares: the tagged answer, the text after the marker, or all
    of it. None when the completion has no such part (the check then fails)."""
    if tag is not None:
        return tagged(text, tag)
    if marker is not None:
        return after(text, marker)
    return text


def numbers(text: str) -> Iterable[str]:
    return (match.group() for match in _NUMBER.finditer(text.translate(_MINUS)))


def number(token: str) -> float | None:
    """A number as written ("1,234.5", "-3", "2e3"), or None: too long, or not finite."""
    if len(token) > MAX_NUMBER:
        return None
    try:
        value = float(token.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def last_number(text: str) -> float | None:
    """The last number written in `text` (an answer usually ends a solution), or None."""
    last = None
    for last in numbers(text):
        pass
    return number(last) if last is not None else None


def expected_number(value: Any) -> float | None:
    """The right answer of a numeric check, from a row: a number, or the last number written in a text
    (as in GSM8K's '... #### 72'); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return number(repr(value))
    return last_number(clean(value)) if isinstance(value, str) else None


def normalize(text: str, steps: Iterable[str]) -> str:
    for step in steps:
        if step == "strip":
            text = text.strip()
        elif step == "lower":
            text = text.casefold()
        elif step == "collapse_whitespace":
            text = _SPACES.sub(" ", text).strip()
        elif step == "strip_punctuation":
            text = _strip_punctuation(text)
    return text


def _strip_punctuation(text: str) -> str:
    """Punctuation and whitespace removed from both ends ("Paris." and "'Paris'" are "Paris")."""
    def removable(character: str) -> bool:
        return character.isspace() or unicodedata.category(character).startswith("P")

    start, end = 0, len(text)
    while start < end and removable(text[start]):
        start += 1
    while end > start and removable(text[end - 1]):
        end -= 1
    return text[start:end]
