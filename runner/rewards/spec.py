"""The `reward` of an RL method's section: a list of weighted terms, each one check of the completion, a
reward model, or a Python function.

    reward:
      - numeric: {column: answer, after: "Answer:"}
      - regex: {pattern: '^Answer: -?[0-9]+$'}
        weight: 0.2

The reward of a completion is the sum of weight x score over the terms. A check scores 1 when it passes
and 0 when it does not (a length penalty scores 0 or below); a reward model scores what its head says; a
function what it returns. One mapping without a list is a list of one term (`reward: {model: ...}`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner import confine
from runner.rewards import jsonvalue
from runner.rewards import pattern as patterns
from runner.rewards.text import NORMALIZE_STEPS, expected_number
from runner.spec.fields import FUNCTION_PATTERN, ModelSource, Section

MAX_TERMS = 16
TERM_NAME = r"^[a-z][a-z0-9_]{0,31}$"
TagName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
Column = Annotated[str, Field(min_length=1, max_length=200)]
Marker = Annotated[str, Field(min_length=1, max_length=200)]

# `schema` and `json` are what users write; pydantic warns that these names shadow BaseModel.schema and
# BaseModel.json, deprecated methods this project never calls.
warnings.filterwarnings("ignore", message='Field name "(schema" in "JsonCheck|json" in "RewardTerm)"',
                        category=UserWarning)


class _Answer(Section):
    """Where a check finds the answer in a completion (neither: the whole completion)."""

    tag: TagName | None = None
    """Read the content of the last <tag>...</tag>, e.g. `answer` for <answer>42</answer>."""
    after: Marker | None = None
    """Read the rest of the line after the last occurrence of this text, e.g. `"Answer:"`."""

    @model_validator(mode="after")
    def _one_place(self):
        if self.tag is not None and self.after is not None:
            raise PydanticCustomError("reward_answer", "give tag or after, not both")
        return self

    def place(self) -> str:
        if self.tag is not None:
            return f"<{self.tag}>...</{self.tag}>"
        return f"the line after '{self.after}'" if self.after is not None else "the completion"


class ExactCheck(_Answer):
    """The answer equals the row's column, once both are normalised."""

    column: Column
    """The column of the data row that holds the right answer."""
    normalize: list[Literal[NORMALIZE_STEPS]] = Field(default_factory=lambda: ["strip", "collapse_whitespace",
                                                                               "lower"])
    """Steps applied to both sides, in order: strip, lower (case-folded), collapse_whitespace,
    strip_punctuation (from both ends)."""

    def describe(self) -> str:
        return f"{self.place()} equals row.{self.column} ({', '.join(self.normalize) or 'as written'})"


class NumericCheck(_Answer):
    """The last number of the answer is the row's number, within a tolerance."""

    column: Column
    """The column of the data row that holds the right number."""
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """Largest absolute difference that still counts as right."""

    def describe(self) -> str:
        return f"last number in {self.place()} is row.{self.column} +/- {self.tolerance:g}"


class RegexCheck(Section):
    """The completion matches a regular expression (RE2 syntax: no backreferences or lookaround)."""

    pattern: Annotated[str, Field(min_length=1)]
    """The pattern; quote it in YAML ('...') so that backslashes stay as written."""
    full: bool = False
    """The whole completion must match; otherwise a match anywhere in it passes."""
    case_sensitive: bool = True
    """Whether letters must match in case."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _compiled(value)

    def describe(self) -> str:
        return f"{'whole completion matches' if self.full else 'matches'} /{self.pattern}/"


class ContainsCheck(Section):
    """The completion contains a text: a fixed one, or the row's column."""

    text: Annotated[str, Field(min_length=1)] | None = None
    """The text to find."""
    column: Column | None = None
    """The column of the data row that holds the text to find."""
    case_sensitive: bool = True
    """Whether letters must match in case."""

    @model_validator(mode="after")
    def _one_needle(self):
        if (self.text is None) == (self.column is None):
            raise PydanticCustomError("reward_contains", "give exactly one of text or column")
        return self

    def describe(self) -> str:
        return f"contains {repr(self.text) if self.text is not None else f'row.{self.column}'}"


class JsonCheck(_Answer):
    """The answer is a JSON document, conforming to a schema when one is given."""

    schema: dict[str, Any] | None = None
    """A JSON Schema, the subset that evals' json_schema metric checks (type, enum, const, properties, required,
    additionalProperties, items, minItems, maxItems, minLength, maxLength, minimum, maximum, exclusiveMinimum,
    exclusiveMaximum, anyOf, allOf, oneOf, not) plus `pattern`, on RE2."""

    @field_validator("schema")
    @classmethod
    def _supported(cls, value: dict | None) -> dict | None:
        problems = jsonvalue.schema_problems(value) if value is not None else []
        if problems:
            raise PydanticCustomError("reward_schema", "{problems}", {"problems": "; ".join(problems[:3])})
        return value

    def describe(self) -> str:
        return f"{self.place()} is JSON" + (" conforming to the schema" if self.schema is not None else "")


class FormatCheck(Section):
    """The completion is tagged parts in a fixed order and nothing else, e.g. [think, answer] for
    <think>...</think><answer>...</answer>."""

    tags: Annotated[list[TagName], Field(min_length=1, max_length=8)]
    """The tags, in order; whitespace may surround each part, and each part must hold some text."""

    def describe(self) -> str:
        return "is exactly " + "".join(f"<{tag}>...</{tag}>" for tag in self.tags)


class LengthCheck(Section):
    """The completion's length is within limits: 1 inside and 0 outside, or, with `penalty`, 0 inside and
    -penalty per unit outside."""

    unit: Literal["tokens", "words", "characters"] = "tokens"
    """What is counted."""
    min: Annotated[int, Field(ge=0)] | None = None
    """Fewest units that pass."""
    max: Annotated[int, Field(ge=1)] | None = None
    """Most units that pass."""
    penalty: Annotated[float, Field(gt=0)] | None = None
    """Score -penalty per unit beyond the limits instead of 0 (a soft limit)."""

    @model_validator(mode="after")
    def _limits(self):
        if self.min is None and self.max is None:
            raise PydanticCustomError("reward_length", "give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError("reward_length", "min {min} is above max {max}", {"min": self.min,
                                                                                         "max": self.max})
        return self

    def describe(self) -> str:
        bounds = " and ".join(part for part in (f">= {self.min}" if self.min is not None else "",
                                                f"<= {self.max}" if self.max is not None else "") if part)
        soft = f", else -{self.penalty:g} per {self.unit[:-1]} beyond" if self.penalty else ""
        return f"{self.unit} {bounds}{soft}"


CHECKS = {"exact": ExactCheck, "numeric": NumericCheck, "regex": RegexCheck, "contains": ContainsCheck,
          "json": JsonCheck, "format": FormatCheck, "length": LengthCheck}
KINDS = (*CHECKS, "model", "function")


class RewardTerm(Section):
    """One term of a reward: exactly one of the checks, `model` or `function`, and its weight."""

    weight: float = 1.0
    """Multiplies the term's score; negative for a penalty. Not 0."""
    name: Annotated[str, Field(pattern=TERM_NAME)] | None = None
    """The term's name in metrics (rewards/NAME/mean); default: its kind (numeric, regex, ..., with _2 for a
    second one), `reward_model`, or the function's name."""
    exact: ExactCheck | None = None
    """The answer equals a column of the row."""
    numeric: NumericCheck | None = None
    """The answer's last number equals a column of the row, within a tolerance."""
    regex: RegexCheck | None = None
    """The completion matches a pattern."""
    contains: ContainsCheck | None = None
    """The completion contains a text."""
    json: JsonCheck | None = None
    """The answer is JSON (conforming to a schema)."""
    format: FormatCheck | None = None
    """The completion is tagged parts in order."""
    length: LengthCheck | None = None
    """The completion's length is within limits."""
    model: ModelSource | None = None
    """A reward model: {job: name} of a `reward` spec, {path: dir}, or a hub id. Scores with its head."""
    function: str | None = None
    """`module:function`, imported and called with (prompts, completions) -> one float each. This runs
    Python code: the watch daemon refuses it unless started with --allow-reward-functions."""

    @field_validator("weight")
    @classmethod
    def _not_zero(cls, value: float) -> float:
        if value == 0:
            raise PydanticCustomError("reward_weight", "a weight of 0 makes the term do nothing; remove the term")
        return value

    @field_validator("function")
    @classmethod
    def _function(cls, value: str | None) -> str | None:
        if value is not None and not FUNCTION_PATTERN.match(value):
            raise PydanticCustomError("reward_function", "'{value}' is not 'module:function'", {"value": value})
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> RewardTerm:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise PydanticCustomError("reward_term", "give exactly one of {kinds} in a reward term (found: {given})",
                                      {"kinds": ", ".join(KINDS), "given": ", ".join(given) or "none"})
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def check(self) -> Section | None:
        """The declared check, or None for a reward model or a function."""
        return getattr(self, self.kind) if self.kind in CHECKS else None

    def default_name(self) -> str:
        if self.function is not None:
            return re.sub(r"[^a-z0-9_]", "_", self.function.split(":")[1].lower()).lstrip("_0123456789") or "function"
        return "reward_model" if self.model is not None else self.kind

    def describe(self) -> str:
        if self.model is not None:
            return f"reward model {self.model.describe()}"
        if self.function is not None:
            return f"Python function {self.function}"
        return f"{self.kind}: {self.check.describe()}"

    def columns(self) -> list[str]:
        """Columns of the data row this term reads."""
        column = getattr(self.check, "column", None)
        return [column] if column is not None else []

    def function_file(self, spec_folder: Path) -> Path | None:
        """The module file beside the spec that `function` names (`pkg.mod:f` is pkg/mod.py or
        pkg/mod/__init__.py), or None: then the module must be installed."""
        module = self.function.split(":")[0]
        relative = Path(*module.split("."))
        for candidate in ((spec_folder / relative).with_suffix(".py"), spec_folder / relative / "__init__.py"):
            if candidate.is_file():
                return confine.check(candidate, self.function)  # a link out of the folder is refused
        return None


def _as_terms(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class DeclaredReward(RootModel):
    """A reward: a list of weighted terms (or one term as a mapping)."""

    # Built when first used, as the spec's sections are: `runner validate` pays for it only on a spec that
    # declares a reward (RootModel[...] would build a parametrised class, and its validator, at import).
    model_config = ConfigDict(defer_build=True)

    root: Annotated[list[RewardTerm], Field(min_length=1, max_length=MAX_TERMS)]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        many = handler(core_schema)
        many = handler.resolve_ref_schema(many) if "$ref" in many else many
        return {"anyOf": [many["items"], many]}

    @model_validator(mode="before")
    @classmethod
    def _one_term(cls, value: Any) -> Any:
        return _as_terms(value)

    @model_validator(mode="after")
    def _consistent(self) -> DeclaredReward:
        names = [term.name for term in self.root if term.name is not None]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PydanticCustomError("reward_names", "term names must differ: {names}", {"names": ", ".join(repeated)})
        if sum(term.model is not None for term in self.root) > 1:
            raise PydanticCustomError("reward_models", "a reward holds at most one reward model",)
        return self

    @property
    def terms(self) -> list[RewardTerm]:
        return list(self.root)

    def named(self) -> list[tuple[str, RewardTerm]]:
        """(name, term) in order: the given names, else the default ones, made distinct with _2, _3, ..."""
        taken = {term.name for term in self.root if term.name is not None}
        named = []
        for term in self.root:
            name = term.name
            if name is None:
                base, count = term.default_name(), 1
                name = base
                while name in taken:
                    count += 1
                    name = f"{base}_{count}"
            taken.add(name)
            named.append((name, term))
        return named

    @property
    def model(self) -> ModelSource | None:
        """The reward model, if a term is one."""
        return next((term.model for term in self.root if term.model is not None), None)

    def functions(self) -> list[tuple[int, str]]:
        """(index of the term, `module:function`) for each Python function term."""
        return [(index, term.function) for index, term in enumerate(self.root) if term.function is not None]

    def columns(self) -> list[str]:
        return sorted({column for term in self.root for column in term.columns()})

    def row_problem(self, row: dict) -> tuple[int, str] | None:
        """(index of the term, why) when a data row lacks what a term reads, else None."""
        for index, term in enumerate(self.root):
            for column in term.columns():
                if row.get(column) is None:
                    return index, f"has no '{column}' (the {term.kind} check reads it)"
                if term.numeric is not None and expected_number(row[column]) is None:
                    return index, f"'{column}' holds no number (the numeric check compares with it): {row[column]!r:.60}"
        return None

    def patterns(self) -> list[tuple[int, str, str]]:
        """(index of the term, its kind, pattern) for every regular expression the reward holds."""
        found = []
        for index, term in enumerate(self.root):
            if term.regex is not None:
                found.append((index, "regex", term.regex.pattern))
            if term.json is not None:
                found += [(index, "json", pattern) for pattern in jsonvalue.schema_patterns(term.json.schema)]
        return found

    def formula(self) -> str:
        """The reward as the plan shows it: weight x name, summed."""
        parts = []
        for position, (name, term) in enumerate(self.named()):
            sign = "-" if term.weight < 0 else "+"
            weight = abs(term.weight)
            shown = name if weight == 1 else f"{weight:g} x {name}"
            parts.append((f"- {shown}" if sign == "-" else shown) if position == 0 else f"{sign} {shown}")
        return " ".join(parts)


def _compiled(pattern: str) -> str:
    """A pattern RE2 accepts (checked where RE2 is installed; the spec check warns where it is not)."""
    try:
        patterns.compile_pattern(pattern)
    except patterns.PatternError as error:
        raise PydanticCustomError("reward_pattern", "{message}", {"message": str(error)}) from None
    except patterns.EngineMissing:
        pass
    return pattern
