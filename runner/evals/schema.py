"""A bounded JSON Schema subset, for the json_schema metric and a declared reward's `json` check: no
package, no network, and `pattern` only where the caller brings a linear-time engine.

The `jsonschema` package would follow `$ref`s to other documents, match `pattern`s with Python's
backtracking `re`, and silently ignore keywords it does not know in some drafts. A spec's schema is
checked here instead against a fixed set of keywords (validate refuses a schema that uses any other,
so that nothing is silently not checked), and an answer is checked in time linear in its size and
the schema's. `pattern` is one more keyword when the caller passes a `Patterns` (the rewards pass
RE2's); without one it is refused like any other unknown keyword.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KEYWORDS = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
    "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "anyOf", "allOf", "oneOf", "not",
})
ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "default", "examples", "$comment"})
"""Keywords that describe, and check nothing."""
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
MAX_DEPTH = 32


@dataclass(frozen=True)
class Patterns:
    """The `pattern` keyword, on an engine the caller trusts with any pattern and any string."""

    problem: Callable[[str], str | None]
    """Why a pattern cannot be used, or None."""
    search: Callable[[str, str], bool]
    """Whether (pattern, text) matches anywhere in the text."""


def problems(schema: Any, where: str = "", depth: int = 0, patterns: Patterns | None = None) -> list[str]:
    """What is wrong with a schema, as `place: reason`; [] when it can be applied."""
    place = where or "the schema"
    if depth > MAX_DEPTH:
        return [f"{place}: nested more than {MAX_DEPTH} levels"]
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{place}: a schema is a mapping (or true/false)"]
    keywords = KEYWORDS | {"pattern"} if patterns else KEYWORDS
    found = []
    for key, value in schema.items():
        inner = f"{where}.{key}" if where else key
        if key in ANNOTATIONS:
            continue
        if key not in keywords:
            found.append(f"{inner}: runner does not check the keyword '{key}' (it checks: "
                         f"{', '.join(sorted(keywords))})")
        elif key == "pattern":
            why = patterns.problem(value) if isinstance(value, str) else "a pattern is a string"
            if why:
                found.append(f"{inner}: {why}")
        elif key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(name not in TYPES for name in names):
                found.append(f"{inner}: {value!r} is not a type ({', '.join(sorted(TYPES))})")
        elif key in ("properties",):
            if not isinstance(value, dict):
                found.append(f"{inner}: a mapping of property names to schemas")
            else:
                for name, sub in value.items():
                    found += problems(sub, f"{inner}.{name}", depth + 1, patterns)
        elif key in ("items", "additionalProperties", "not"):
            found += problems(value, inner, depth + 1, patterns)
        elif key in ("anyOf", "allOf", "oneOf"):
            if not isinstance(value, list) or not value:
                found.append(f"{inner}: a non-empty list of schemas")
            else:
                for index, sub in enumerate(value):
                    found += problems(sub, f"{inner}[{index}]", depth + 1, patterns)
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
                found.append(f"{inner}: a list of property names")
        elif key == "enum":
            if not isinstance(value, list):
                found.append(f"{inner}: a list of values")
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                found.append(f"{inner}: a whole number >= 0")
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                found.append(f"{inner}: a number")
    return found


def satisfies(value: Any, schema: Any, depth: int = 0, patterns: Patterns | None = None) -> bool:
    """Whether a JSON value satisfies a schema that `problems` accepts (with the same `patterns`)."""
    if isinstance(schema, bool):
        return schema
    if depth > MAX_DEPTH:
        return False
    checks = (
        ("type", lambda expected: any(_is_type(value, name) for name in
                                      (expected if isinstance(expected, list) else [expected]))),
        ("enum", lambda options: any(_equal(value, option) for option in options)),
        ("const", lambda constant: _equal(value, constant)),
        ("anyOf", lambda subs: any(satisfies(value, sub, depth + 1, patterns) for sub in subs)),
        ("allOf", lambda subs: all(satisfies(value, sub, depth + 1, patterns) for sub in subs)),
        ("oneOf", lambda subs: sum(satisfies(value, sub, depth + 1, patterns) for sub in subs) == 1),
        ("not", lambda sub: not satisfies(value, sub, depth + 1, patterns)),
    )
    for key, check in checks:
        if key in schema and not check(schema[key]):
            return False
    if isinstance(value, dict):
        return _object(value, schema, depth, patterns)
    if isinstance(value, list):
        items = schema.get("items", True)
        return (schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf)
                and all(satisfies(item, items, depth + 1, patterns) for item in value))
    if isinstance(value, str):
        return (schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
                and ("pattern" not in schema or patterns.search(schema["pattern"], value)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ((value >= schema["minimum"] if "minimum" in schema else True)
                and (value <= schema["maximum"] if "maximum" in schema else True)
                and (value > schema["exclusiveMinimum"] if "exclusiveMinimum" in schema else True)
                and (value < schema["exclusiveMaximum"] if "exclusiveMaximum" in schema else True))
    return True


def _object(value: dict, schema: dict, depth: int, patterns: Patterns | None) -> bool:
    if any(name not in value for name in schema.get("required", ())):
        return False
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = properties.get(name, extra)
        if not satisfies(item, sub, depth + 1, patterns):
            return False
    return True


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kinds[name])


def _equal(left: Any, right: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_equal(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right))
    return left == right
