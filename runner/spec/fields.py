"""Field types shared by the spec models and the method descriptors (runner/methods/descriptors/).

Both import from here, never from each other, so a descriptor's section model can use them while
`runner.spec.models` adds the descriptors' sections to the JobSpec (`spec_model`, `schema_model`).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
FUNCTION_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, defer_build=True)


def or_auto(expected: str) -> WrapValidator:
    """Report a bad `X | "auto"` value as one clear error instead of one per union member."""

    def validate(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("auto_or", "expected {expected} or 'auto', got {got}",
                                      {"expected": expected, "got": repr(value)}) from None

    return WrapValidator(validate)


Auto = Literal["auto"]
CountOrAuto = Annotated[Annotated[int, Field(ge=1)] | Auto, or_auto("a whole number >= 1")]
PositiveOrAuto = Annotated[Annotated[float, Field(gt=0)] | Auto, or_auto("a number > 0")]
SwitchOrAuto = Annotated[bool | Auto, or_auto("true or false")]
Count = Annotated[int, Field(ge=1)]


def hub_id(value: str | None) -> str | None:
    """A field validator's check of a hub id (`org/name`)."""
    if value is not None and (not HUB_ID_PATTERN.match(value) or ".." in value or "--" in value):
        raise PydanticCustomError(
            "hub_id", "'{value}' is not a hub id (expected 'org/name'); "
            "for a local folder write ./{value}", {"value": value})
    return value


def exactly_one(source: Any, keys: tuple[str, ...], error: str, things: str) -> Any:
    """A source model's check: exactly one of `keys` is given, and `revision` only with `hub`."""
    given = [key for key in keys if getattr(source, key) is not None]
    if len(given) != 1:
        raise PydanticCustomError(error, "give exactly one of {keys} (found: {given})",
                                  {"keys": ", ".join(keys[:-1]) + " or " + keys[-1], "given": ", ".join(given) or "none"})
    if source.revision is not None and source.hub is None:
        raise PydanticCustomError(error, "revision applies to hub {things} only", {"things": things})
    return source


def not_one_of(error: str, template: str, word: str, choices) -> PydanticCustomError:
    """The error for a word that is not one of `choices`; `template` places {word}, {hint} (a did-you-mean)
    and {choices}."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return PydanticCustomError(error, template, {"word": word, "hint": f"; did you mean '{close[0]}'?" if close else "",
                                                 "choices": ", ".join(choices)})


class SourceOfRows(Section):
    """What a source of rows checks, whatever reads it (data.train and data.eval, a test set of evals): exactly
    one of `path` or `hub` (a plain string is a path), a hub id, `columns` mapping the row keys of ROW_KEYS.
    Each subclass declares the fields (path, hub, revision, config, split, columns) with its own docs."""

    ROW_KEYS: ClassVar[tuple[str, ...]] = ()
    EXTRA_COLUMNS: ClassVar[bool] = False
    """Whether `columns` may keep another column under its own name (one a reward check reads); a key close
    to a row key is a typo all the same."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        shorthand = {"type": "string", "description": "a file or folder, relative to the spec file"}
        return {"anyOf": [shorthand, handler(core_schema)]}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        if not isinstance(value, dict):
            raise PydanticCustomError("data_source", "expected a path, or a mapping with path or hub")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceOfRows:
        return exactly_one(self, ("path", "hub"), "data_source", "datasets")

    @field_validator("hub", check_fields=False)
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        return hub_id(value)

    @field_validator("columns", check_fields=False)
    @classmethod
    def _row_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, column in value.items():
            typo = difflib.get_close_matches(key, cls.ROW_KEYS, n=1, cutoff=0.8)  # as formats.detect
            if key not in cls.ROW_KEYS and (typo or not cls.EXTRA_COLUMNS):
                raise not_one_of("columns", "'{word}' is not a row key{hint} (row keys: {choices})", key, cls.ROW_KEYS)
            if not column:
                raise PydanticCustomError("columns", "columns.{key} names no column", {"key": key})
        return value

    def describe(self) -> str:
        if self.hub is not None:
            return self.hub + (f"@{self.revision}" if self.revision else "")
        return self.path


class ModelSource(Section):
    """Where a model comes from: exactly one of `hub`, `path` or `job`.

    A plain string is a shorthand: `./dir`, `/abs/dir` and `*.gguf` are paths, anything
    else is a hub id.
    """

    hub: str | None = None
    """A Hugging Face hub id, like `HuggingFaceTB/SmolLM2-135M-Instruct`."""
    revision: str | None = None
    """A hub branch, tag or commit; recorded in the plan. Only with `hub`."""
    path: str | None = None
    """A local model directory or a `.gguf` file (dequantised), relative to the spec file."""
    job: str | None = None
    """The name of another spec in the same folder: its latest succeeded run's model."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model. Off unless you trust the repository."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        shorthand = {"type": "string", "description": "hub id, ./local/dir, or file.gguf"}
        return {"anyOf": [shorthand, handler(core_schema)]}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith((".", "/", "~")) or value.endswith(".gguf"):
                return {"path": value}
            return {"hub": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "model_source", "expected a hub id, a path, or a mapping with hub, path or job")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        return exactly_one(self, ("hub", "path", "job"), "model_source", "models")

    @field_validator("hub")
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        return hub_id(value)

    @field_validator("job")
    @classmethod
    def _job_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(NAME_PATTERN, value):
            raise PydanticCustomError("job_name", "'{value}' is not a job name (lowercase letters, digits, '-')",
                                      {"value": value})
        return value

    def describe(self) -> str:
        if self.hub:
            return self.hub + (f"@{self.revision}" if self.revision else "")
        return self.path if self.path else f"job:{self.job}"
