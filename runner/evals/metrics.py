"""What each metric of a test set scores, per row, from an answer and its reference. Torch-free.

| metric        | a row scores                                                   | needs a reference |
|---------------|----------------------------------------------------------------|-------------------|
| exact_match   | 1 when the answer equals the reference (or one of a list)       | yes               |
| contains      | 1 when the answer contains the reference (or one of a list)     | yes               |
| regex         | 1 when the answer matches the pattern (under a time bound)     | no                |
| numeric       | 1 when the answer's last number is the reference, within tolerance | yes            |
| valid_json    | 1 when the whole answer is JSON                                | no                |
| json_schema   | 1 when the answer is JSON that satisfies the schema            | no                |
| length        | the answer's length in characters, words or tokens             | no                |
| loglikelihood | the mean log-probability per token of the reference            | yes               |

A set's score for a metric is the mean over its rows.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any

from runner.evals import schema as json_schema
from runner.evals.regex import BoundedRegex, MatchTimedOut
from runner.readers import loads_bounded, read_regular

METRICS = ("exact_match", "contains", "regex", "numeric", "valid_json", "json_schema", "length", "loglikelihood")
NEEDS_REFERENCE = frozenset({"exact_match", "contains", "numeric", "loglikelihood"})
WITHOUT_GENERATION = frozenset({"loglikelihood"})
LOWER_IS_BETTER = frozenset({"length"})
"""Shorter answers are not always better; keep_best refuses length (see `direction`)."""
MAX_SCHEMA_BYTES = 1024 * 1024
MAX_REFERENCES = 100
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def generates(names: list[str]) -> bool:
    """Whether any of these metrics scores a generated answer."""
    return any(name not in WITHOUT_GENERATION for name in names)


def pattern_problem(pattern: str) -> str | None:
    """Why a regex metric's pattern cannot be used, or None. Compiling takes time linear in the pattern."""
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as error:
        return f"not a regular expression: {error}"
    return None


def load_schema(path: Path) -> Any:
    """A json_schema metric's schema file; ValueError or OSError when it cannot be read as JSON."""
    return loads_bounded(read_regular(path, MAX_SCHEMA_BYTES))


def reference_problem(reference: Any) -> str | None:
    """Why a row's reference cannot be used: a string, a number, or a list of strings."""
    if isinstance(reference, bool) or reference is None:
        return f'"reference" must be text, a number or a list of texts, not {reference!r}'
    if isinstance(reference, (str, int, float)):
        return None if not isinstance(reference, float) or math.isfinite(reference) else '"reference" is not finite'
    if isinstance(reference, list):
        if not reference or len(reference) > MAX_REFERENCES or not all(isinstance(item, str) for item in reference):
            return f'"reference" as a list holds 1 to {MAX_REFERENCES} texts'
        return None
    return '"reference" must be text, a number or a list of texts'


def references(reference: Any) -> list[str]:
    if isinstance(reference, list):
        return list(reference)
    return [reference if isinstance(reference, str) else _number_text(reference)]


def _number_text(value: float | int) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def normalise(text: str, settings) -> str:
    if settings.ignore_case:
        text = text.lower()
    if settings.ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    if settings.collapse_whitespace:
        text = " ".join(text.split())
    return text.strip()


def last_number(text: str) -> float | None:
    """The last number written in a text (1,234.5 is one number), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def number_of(reference: Any) -> float | None:
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return float(reference)
    if isinstance(reference, str):
        return last_number(reference)
    return None


class Scorer:
    """Scores rows by a set's metrics. Schema files resolve relative to `folder` (the spec's); regex
    matches run in one bounded worker shared by every row."""

    def __init__(self, metrics: list, folder: Path) -> None:
        self.metrics = metrics
        self.schemas = {}
        for metric in metrics:
            if metric.name == "json_schema":
                settings = metric.settings
                self.schemas[metric.name] = settings.inline if settings.inline is not None else \
                    load_schema(folder / settings.file)
        self.regex = BoundedRegex() if any(metric.name == "regex" for metric in metrics) else None

    def score(self, answer: str, reference: Any, *, tokens: int, loglikelihood: float | None
              ) -> tuple[dict[str, float], list[str]]:
        """({metric: score}, notes) for one row; a note says why a row scored 0 that it might not deserve
        (a regex match that ran out of time)."""
        scores, notes = {}, []
        for metric in self.metrics:
            name, settings = metric.name, metric.settings
            if name == "loglikelihood":
                scores[name] = loglikelihood
            elif name == "length":
                scores[name] = float({"characters": len(answer), "words": len(answer.split()),
                                      "tokens": tokens}[settings.unit])
            elif name in ("exact_match", "contains"):
                said = normalise(answer, settings)
                wanted = [normalise(text, settings) for text in references(reference)]
                hit = said in wanted if name == "exact_match" else any(text in said for text in wanted)
                scores[name] = float(hit)
            elif name == "numeric":
                scores[name] = float(_close(last_number(answer), number_of(reference), settings))
            elif name in ("valid_json", "json_schema"):
                parsed = _json(answer)
                ok = parsed is not _NOT_JSON
                if ok and name == "json_schema":
                    ok = json_schema.satisfies(parsed, self.schemas[name])
                scores[name] = float(ok)
            elif name == "regex":
                try:
                    scores[name] = float(self.regex.matches(settings.pattern, answer, full=settings.full,
                                                            ignore_case=settings.ignore_case))
                except MatchTimedOut as error:
                    scores[name] = 0.0
                    notes.append(f"regex: {error}; scored 0")
        return scores, notes

    def close(self) -> None:
        if self.regex is not None:
            self.regex.close()


_NOT_JSON = object()


def _json(text: str) -> Any:
    try:
        return loads_bounded(text.strip().encode())
    except ValueError:
        return _NOT_JSON


def _close(found: float | None, wanted: float | None, settings) -> bool:
    if found is None or wanted is None:
        return False
    return abs(found - wanted) <= max(settings.tolerance, settings.relative * abs(wanted))
