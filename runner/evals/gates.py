"""Gates: conditions a result must meet, like `chatty-name.exact_match >= 0.9` or
`hellaswag.acc_norm >= base - 0.02`, parsed without torch (validate) and decided from the results.

    NAME.METRIC OP VALUE      OP: >= > <= < ==     VALUE: a number, base, base + X, base - X

METRIC is a test set's metric name, or an lm-eval metric as its results name it (`acc_norm`, or with a
filter: `exact_match,strict-match`). `base` is the base model's score on the same eval.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

_GATE = re.compile(r"^\s*(?P<eval>[a-z0-9][a-z0-9_-]*)\.(?P<metric>[A-Za-z0-9_]+(?:,[A-Za-z0-9_-]+)?)\s*"
                   r"(?P<op>>=|<=|==|>|<)\s*(?P<value>.*?)\s*$")
_VALUE = re.compile(r"^(?:(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)|"
                    r"base(?:\s*(?P<sign>[-+])\s*(?P<offset>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?))?)$")
OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class GateError(ValueError):
    """A condition that cannot be read."""


@dataclass(frozen=True)
class Gate:
    text: str
    eval: str
    metric: str
    op: str
    number: float | None
    """The threshold, when it is a number; else it is relative to the base's score:"""
    offset: float | None
    """base + offset (None: the threshold is `number`)."""

    @property
    def relative(self) -> bool:
        return self.offset is not None

    def threshold(self, base: float | None) -> float | None:
        if not self.relative:
            return self.number
        return None if base is None else base + self.offset

    def decide(self, value: float | None, base: float | None) -> tuple[bool, float | None, str | None]:
        """(passed, threshold, why it could not be decided); a missing score never passes."""
        threshold = self.threshold(base)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False, threshold, f"no {self.eval}.{self.metric} score"
        if threshold is None:
            return False, None, f"no base score of {self.eval}.{self.metric} to compare with"
        return bool(OPERATORS[self.op](value, threshold)), threshold, None


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if match is None:
        raise GateError(f"'{text}' is not a condition; write NAME.METRIC OP VALUE, e.g. "
                        "chatty-name.exact_match >= 0.9 or tiny-mc.acc_norm >= base - 0.02")
    value = _VALUE.match(match["value"])
    if value is None:
        raise GateError(f"'{match['value']}' is not a number, base, base + X or base - X")
    if value["number"] is not None:
        number, offset = float(value["number"]), None
    else:
        number = None
        offset = float(value["offset"] or 0) * (-1 if value["sign"] == "-" else 1)
    if not math.isfinite(number if number is not None else offset):
        raise GateError(f"'{match['value']}' is not a finite number")
    return Gate(text.strip(), match["eval"], match["metric"], match["op"], number, offset)
