"""JSON in completions: bounded parsing, and the subset of JSON Schema a `json` check conforms to.

Parsing is bounded before it starts: the text is at most text.MAX_TEXT characters, its nesting is counted
in one pass and refused beyond MAX_DEPTH (Python's parser would recurse until it raised, thousands of
frames deep), integers have at most Python's 4,300 digits (longer is an error, not minutes of
conversion), and NaN and Infinity are not JSON.

The schema is the evals' bounded JSON Schema subset (runner.evals.schema: an unknown keyword is a validate
error, not a keyword silently ignored; no `$ref`), with `pattern` on RE2 like every pattern of a reward.
"""

from __future__ import annotations

import json
from typing import Any

from runner.evals import schema as json_schema
from runner.rewards import pattern as patterns

MAX_DEPTH = 32
"""Nesting of a parsed value (objects and arrays)."""


class _NotJson(ValueError):
    pass


def parse(text: str) -> tuple[bool, Any]:
    """(True, value) for a JSON document (surrounding whitespace allowed), else (False, None)."""
    if _depth(text) > MAX_DEPTH:
        return False, None
    try:
        return True, json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, NaN
        return False, None


def _no_constant(name: str):
    raise _NotJson(f"{name} is not JSON")


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (a malformed text gets some number; parse refuses it)."""
    depth = deepest = 0
    in_string = escaped = False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif character in "]}":
            depth -= 1
    return deepest


# --- the schema, as the spec gives it, and conformance -----------------------------------------------

def _pattern_problem(written: str) -> str | None:
    try:
        patterns.compile_pattern(written)
    except patterns.PatternError as error:
        return str(error)
    except patterns.EngineMissing:
        return None  # the spec check warns that patterns were not checked here
    return None


PATTERNS = json_schema.Patterns(problem=_pattern_problem,
                                search=lambda written, text: patterns.compile_pattern(written).search(text) is not None)


def schema_problems(schema: Any, where: str = "schema") -> list[str]:
    """Why `schema` is not a schema of the supported subset ([] when it is), each naming its place."""
    return json_schema.problems(schema, where, patterns=PATTERNS)


def schema_patterns(schema: Any) -> list[str]:
    """Every `pattern` in a (valid) schema."""
    if not isinstance(schema, dict):
        return []
    found = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
    inner = [*(schema.get("properties") or {}).values(), schema.get("items"), schema.get("additionalProperties"),
             schema.get("not"), *(sub for key in ("anyOf", "allOf", "oneOf") for sub in schema.get(key) or ())]
    for sub in inner:
        found += schema_patterns(sub)
    return found


def conforms(value: Any, schema: dict) -> bool:
    """Whether a parsed value satisfies a schema that schema_problems accepts."""
    return json_schema.satisfies(value, schema, patterns=PATTERNS)
