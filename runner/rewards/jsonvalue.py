"""JSON in completions: bounded parsing, and the subset of JSON Schema a `json` check conforms to.

Parsing is bounded before it starts: the text is at most text.MAX_TEXT characters, its nesting is counted
in one pass and refused beyond MAX_DEPTH (Python's parser would recurse until it raised, thousands of
frames deep), integers have at most Python's 4,300 digits (longer is an error, not minutes of
conversion), and NaN and Infinity are not JSON.

The schema subset is checked when the spec is validated (an unknown keyword is an error, not a keyword
silently ignored), and its `pattern` runs on RE2 like every pattern. No `$ref`: a schema is a tree, and
conformance is bounded by the depth of the value and of the schema.
"""

from __future__ import annotations

import json
import math
from typing import Any

from runner.rewards import pattern as patterns

MAX_DEPTH = 32
"""Nesting of a parsed value (objects and arrays)."""
MAX_SCHEMA_DEPTH = 16
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern",
    "title", "description",
})
_TYPE_NAMES = (*TYPES, "number", "integer")


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


# --- the schema, as the spec gives it -----------------------------------------------------------------

def schema_problems(schema: Any, where: str = "schema", depth: int = 0) -> list[str]:
    """Why `schema` is not a schema of the supported subset ([] when it is), each naming its place."""
    if not isinstance(schema, dict):
        return [f"{where} must be a mapping of JSON Schema keywords"]
    if depth > MAX_SCHEMA_DEPTH:
        return [f"{where} nests deeper than {MAX_SCHEMA_DEPTH} levels"]
    problems = [f"{where}: '{key}' is not a supported keyword (supported: {', '.join(sorted(KEYWORDS))})"
                for key in schema if key not in KEYWORDS]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if not all(isinstance(k, str) and k in _TYPE_NAMES for k in kinds):
        problems.append(f"{where}.type must be one of {', '.join(_TYPE_NAMES)} (or a list of them)")
    for key in ("properties",):
        if key in schema:
            if not isinstance(schema[key], dict):
                problems.append(f"{where}.{key} must map names to schemas")
            else:
                for name, sub in schema[key].items():
                    problems += schema_problems(sub, f"{where}.{key}.{name}", depth + 1)
    for key in ("items", "additionalProperties"):
        if key in schema and not isinstance(schema[key], bool):
            problems += schema_problems(schema[key], f"{where}.{key}", depth + 1)
    if "required" in schema and not (isinstance(schema["required"], list)
                                     and all(isinstance(name, str) for name in schema["required"])):
        problems.append(f"{where}.required must be a list of property names")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{where}.enum must be a list of values")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not _is_number(schema[key]):
            problems.append(f"{where}.{key} must be a number")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in schema and not (type(schema[key]) is int and schema[key] >= 0):
            problems.append(f"{where}.{key} must be a whole number >= 0")
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            problems.append(f"{where}.pattern must be a string")
        else:
            try:
                patterns.compile_pattern(schema["pattern"])
            except patterns.PatternError as error:
                problems.append(f"{where}.pattern: {error}")
            except patterns.EngineMissing:
                pass  # the spec check warns that patterns were not checked here
    return problems


def schema_patterns(schema: Any) -> list[str]:
    """Every `pattern` in a (valid) schema."""
    if not isinstance(schema, dict):
        return []
    found = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
    for sub in (schema.get("properties") or {}).values():
        found += schema_patterns(sub)
    for key in ("items", "additionalProperties"):
        found += schema_patterns(schema.get(key))
    return found


# --- conformance --------------------------------------------------------------------------------------

def conforms(value: Any, schema: dict) -> bool:
    """Whether a parsed value satisfies a schema of the subset."""
    if schema.get("type") is not None and not _has_type(value, schema["type"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        return False
    if _is_number(value):
        if not _within(value, schema):
            return False
    elif isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
            return False
        if "pattern" in schema and patterns.compile_pattern(schema["pattern"]).search(value) is None:
            return False
    elif isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
            return False
        items = schema.get("items", True)
        if items is False and value or isinstance(items, dict) and not all(conforms(item, items) for item in value):
            return False
    elif isinstance(value, dict):
        return _object_conforms(value, schema)
    return True


def _object_conforms(value: dict, schema: dict) -> bool:
    if any(name not in value for name in schema.get("required", ())):
        return False
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = properties.get(name, extra)
        if sub is False or isinstance(sub, dict) and not conforms(item, sub):
            return False
    return True


def _has_type(value: Any, kind: str | list[str]) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    for name in kinds:
        if name == "number" and _is_number(value):
            return True
        if name == "integer" and _is_number(value) and float(value).is_integer():
            return True
        if name in TYPES and type(value) is TYPES[name]:
            return True
    return False


def _within(value: float, schema: dict) -> bool:
    return (value >= schema.get("minimum", -math.inf) and value <= schema.get("maximum", math.inf)
            and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
            and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: 1 equals 1.0, true is not 1 (at any depth)."""
    if _is_number(value) and _is_number(expected):
        return value == expected
    if type(value) is not type(expected):
        return False
    if isinstance(value, list):
        return len(value) == len(expected) and all(_same(a, b) for a, b in zip(value, expected))
    if isinstance(value, dict):
        return value.keys() == expected.keys() and all(_same(value[key], expected[key]) for key in value)
    return value == expected
