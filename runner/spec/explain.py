"""Turn pydantic's validation errors into diagnostics a person can act on."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel

from runner.spec.diagnostics import Diagnostic
from runner.spec.fielddocs import docs_of
from runner.spec.models import NAME_PATTERN
from runner.spec.yamlpos import YamlDocument, format_path


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the fields at `loc` (list indices skipped)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found:
                return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(word: Any, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _flattened(parent: type[BaseModel] | None, key: Any, value: Any) -> str | None:
    """`lora_r: 8` for `lora: {r: 8}`: a key of a section written beside it with the section's name in
    front (as other tools' flat options are), said as the nesting it needs."""
    if parent is None or not isinstance(key, str):
        return None
    for section, field in parent.model_fields.items():
        inner = _model_in(field.annotation)
        rest = key.removeprefix(section).lstrip("_.")
        if inner is not None and rest != key and rest in inner.model_fields:
            return f"'{rest}' is a key of '{section}': write {section}: {{{rest}: {_yaml_value(value)}}}"
    return None


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else "..."


def _same_but_case(word: Any, choices: list[str]) -> str | None:
    """`SFT` for `sft`: difflib scores case differences as typos, and may suggest nothing."""
    same = [choice for choice in choices if choice.lower() == str(word).lower()]
    return f"values are case-sensitive: write '{same[0]}'" if same else None


def explain(error: dict, document: YamlDocument, model: type[BaseModel]) -> Diagnostic:
    """The diagnostic for one of pydantic's errors in validating `document` with `model`."""
    loc = tuple(error["loc"])
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    path = format_path(loc)
    summary, hint, at_key = error["msg"].removeprefix("Value error, "), None, False

    if kind == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        known = list(parent.model_fields) if parent else []
        summary, at_key = f"unknown key '{loc[-1]}'", True
        hint = _flattened(parent, loc[-1], value) or _did_you_mean(loc[-1], known) or (
            f"keys allowed here: {', '.join(known)}" if known else None)
    elif kind == "missing":
        parent = model_at(model, loc[:-1])
        doc = docs_of(parent).get(str(loc[-1]), "") if parent else ""
        summary = f"missing required key '{loc[-1]}'"
        hint = doc.splitlines()[0] if doc else None
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'|\b(\d+)\b", context.get("expected", ""))
        choices = [text or number for text, number in choices]
        summary = f"{_short(value)} is not one of: {', '.join(choices)}"
        hint = _same_but_case(value, choices) or _did_you_mean(value, choices)
    elif kind == "string_pattern_mismatch" and loc == ("name",):
        slug = re.sub(r"[^a-z0-9-]+", "-", str(value).lower()).strip("-")
        summary = f"{_short(value)} is not a valid name"
        hint = "use lowercase letters, digits and '-'" + (f", e.g. '{slug}'" if re.match(NAME_PATTERN, slug) else "")
    elif kind == "bool_type":
        summary, hint = f"expected true or false, got {_short(value)}", "write true or false (yes/no are text)"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        summary = f"expected a mapping of keys, got {_short(value)}"
    elif summary.startswith("Input should be"):
        summary = "should be" + summary.removeprefix("Input should be") + f", got {_short(value)}"
    return Diagnostic("error", summary, document.file, path, document.locate(loc, key=at_key), hint=hint)
