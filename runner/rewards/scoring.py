"""Scoring: each declared check of a reward on each completion, and the weighted total.

GRPO and RLOO give TRL one reward function per term (TRL weighs and sums them with the same weights);
PPO sums them itself with `total`; the before/after evaluation of a run scores the base and the trained
model's answers with the same scorer. Nothing here runs code from the spec, and each check takes time
linear in the completion, which text.clean bounds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.rewards import jsonvalue, text
from runner.rewards.pattern import compile_pattern
from runner.rewards.spec import (ContainsCheck, DeclaredReward, ExactCheck, FormatCheck, JsonCheck, LengthCheck,
                                 NumericCheck, RegexCheck, RewardTerm)


@dataclass(frozen=True)
class Completion:
    """A completion as checks see it: its text, and its length in tokens (for length checks in tokens)."""

    text: str
    tokens: int | None = None


def score_check(check: Any, completion: Completion, row: Mapping[str, Any]) -> float:
    """One check's score of one completion: 1 passes, 0 fails (a soft length limit: 0 or a penalty)."""
    written = text.clean(completion.text)
    if isinstance(check, LengthCheck):
        return _length(check, completion, written)
    if isinstance(check, RegexCheck):
        compiled = compile_pattern(check.pattern, case_sensitive=check.case_sensitive)
        found = compiled.fullmatch(written) if check.full else compiled.search(written)
        return float(found is not None)
    if isinstance(check, ContainsCheck):
        needle = check.text if check.text is not None else _cell(row, check.column)
        if needle is None:
            return 0.0
        if not check.case_sensitive:
            needle, written = needle.casefold(), written.casefold()
        return float(needle in written)
    if isinstance(check, FormatCheck):
        return float(_formatted(written, check.tags))
    answer = text.answer(written, check.tag, check.after)
    if answer is None:
        return 0.0
    if isinstance(check, ExactCheck):
        expected = _cell(row, check.column)
        return float(expected is not None
                     and text.normalize(answer, check.normalize) == text.normalize(expected, check.normalize))
    if isinstance(check, NumericCheck):
        expected, got = text.expected_number(row.get(check.column)), text.last_number(answer)
        return float(expected is not None and got is not None and abs(got - expected) <= check.tolerance)
    if isinstance(check, JsonCheck):
        parsed, value = jsonvalue.parse(_unfenced(answer))
        return float(parsed and (check.schema is None or jsonvalue.conforms(value, check.schema)))
    raise TypeError(f"not a declared check: {type(check).__name__}")


class RewardScorer:
    """The declared checks of one reward, ready to score. Making it compiles every pattern, so a machine
    without RE2 fails when the run starts (pattern.EngineMissing), not at the first step."""

    def __init__(self, reward: DeclaredReward) -> None:
        self.reward = reward
        self.named = reward.named()
        for _, term in self.named:
            if term.regex is not None:
                compile_pattern(term.regex.pattern, case_sensitive=term.regex.case_sensitive)
            for written in jsonvalue.schema_patterns(term.json.schema) if term.json is not None else ():
                compile_pattern(written)

    @property
    def checks(self) -> list[tuple[str, RewardTerm]]:
        """(name, term) of the declared checks, in the reward's order."""
        return [(name, term) for name, term in self.named if term.check is not None]

    def score(self, term: RewardTerm, completions: Sequence[Completion], rows: Sequence[Mapping[str, Any]]
              ) -> list[float]:
        return [score_check(term.check, completion, row) for completion, row in zip(completions, rows, strict=True)]

    def scores(self, completions: Sequence[Completion], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
        """{check name: one score per completion} for every declared check."""
        return {name: self.score(term, completions, rows) for name, term in self.checks}

    def total(self, scores: Mapping[str, Sequence[float]]) -> list[float]:
        """The reward of each completion: the sum of weight x score over the terms in `scores` (every term's
        for the reward itself; the checks' alone for what the checks say)."""
        count = len(next(iter(scores.values()))) if scores else 0
        return [sum(term.weight * scores[name][i] for name, term in self.named if name in scores)
                for i in range(count)]


def _length(check: LengthCheck, completion: Completion, written: str) -> float:
    if check.unit == "tokens":
        if completion.tokens is None:
            raise ValueError("a length check in tokens needs each completion's token count")
        count = completion.tokens
    else:
        count = len(written.split()) if check.unit == "words" else len(written)
    below = max(0, (check.min or 0) - count)
    above = max(0, count - check.max) if check.max is not None else 0
    if check.penalty is None:
        return float(below == 0 and above == 0)
    return -check.penalty * (below + above) if below or above else 0.0


def _formatted(written: str, tags: Sequence[str]) -> bool:
    """Whether `written` is <tag>...</tag> for each tag in order, each holding text, with only whitespace
    around them. One pass: each part is found with one search from where the last one ended."""
    position = 0
    for tag in tags:
        opening, closing = f"<{tag}>", f"</{tag}>"
        while position < len(written) and written[position].isspace():
            position += 1
        if not written.startswith(opening, position):
            return False
        end = written.find(closing, position + len(opening))
        if end < 0:
            return False
        content = written[position + len(opening):end]
        if not content.strip() or opening in content:
            return False
        position = end + len(closing)
    return not written[position:].strip()


def _cell(row: Mapping[str, Any], column: str) -> str | None:
    """A row's column as text: a string as it is, a number or a list as JSON; None when the row lacks it."""
    value = row.get(column)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _unfenced(answer: str) -> str:
    """JSON in a Markdown code fence (```json ... ```), as models often write it, without the fence."""
    stripped = answer.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        body = stripped[3:-3]
        return body.split("\n", 1)[1] if "\n" in body else body
    return stripped
