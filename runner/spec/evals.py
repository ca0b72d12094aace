"""The `evals` section of a spec: test sets of the user's own, lm-eval-harness tasks, and gates.

    evals:
      sets:                                   # rows with a prompt and a reference, scored per row
        - name: chatty-name
          data: data/chatty-names.jsonl
          metrics: [exact_match, {contains: {ignore_case: true}}]
      tasks:                                  # lm-eval-harness tasks (the `evals` extra)
        - task: tiny_mc
          include_path: tasks/
          limit: 50
      every: 20                               # steps between evaluations of the sets while training
      require:                                # gates: a run that misses one fails (kind `gate`)
        - chatty-name.exact_match >= 0.9
        - tiny_mc.acc_norm >= base - 0.02

Each model checks its own values; what needs the files (they exist, rows have the shape the metrics
need, task files declare the task) is `runner.spec.evalcheck`'s, and what a gate may name is checked
there too, with the place of every mistake. Torch-free, and lm-eval is never imported here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner.evals import metrics as metric_names
from runner.evals.gates import GateError, parse_gate
from runner.spec.fields import Count, Section, SourceOfRows, SwitchOrAuto, not_one_of

EVAL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TASK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
MAX_PATTERN = 1000
"""Characters of a regex metric's pattern; real ones are tens."""
MAX_STOP = 16
EVAL_ROW_KEYS = ("completion", "prompt", "reference")


class EvalSource(SourceOfRows):
    """A test set's rows: exactly one of `path` or `hub` (a plain string is a path), read as `data`'s sources
    are. Rows have a `prompt` (text or messages) and a `reference`; a `completion` is read as the reference,
    so held-out rows of the training format serve as they are."""

    path: str | None = None
    """A .jsonl, .csv or .parquet file, or a folder of such files, relative to the spec file."""
    hub: str | None = None
    """A dataset on the Hugging Face hub (`org/name`), read from the local hub cache and never downloaded."""
    revision: str | None = None
    """A branch, tag or commit of the hub dataset; only with `hub`."""
    config: str | None = None
    """The configuration (subset) of a dataset whose README defines several."""
    split: str | None = None
    """The split to read; default: the only one (name it when there are several)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Row keys taken from columns of other names, {key: column}, e.g. {prompt: question, reference: answer}."""

    ROW_KEYS = EVAL_ROW_KEYS
    weight: ClassVar[float] = 1.0
    """Every row of a test set is read once (sources are read as data's are, by weight)."""


class Normalised(Section):
    """How an answer and its reference are compared: both ends are always stripped of whitespace."""

    ignore_case: bool = False
    """Compare lowercased text."""
    ignore_punctuation: bool = False
    """Drop punctuation before comparing ("Chatty." matches "Chatty")."""
    collapse_whitespace: bool = True
    """Runs of spaces, tabs and newlines count as one space."""


class RegexMetric(Section):
    pattern: Annotated[str, Field(min_length=1, max_length=MAX_PATTERN)]
    """A Python regular expression the answer must match (searched anywhere in it, unless full: true). Each
    match runs under a time bound in a separate process: a pattern that backtracks without end scores the
    row 0 and says so, it never hangs the run."""
    full: bool = False
    """The whole answer must match, not a part of it."""
    ignore_case: bool = False
    """Match regardless of case."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return {"anyOf": [{"type": "string", "description": "the pattern"}, handler(core_schema)]}

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        problem = metric_names.pattern_problem(value)
        if problem:
            raise PydanticCustomError("regex", "{problem}", {"problem": problem})
        return value


class NumericMetric(Section):
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """The last number in the answer may differ from the reference by this much."""
    relative: Annotated[float, Field(ge=0)] = 0.0
    """... or by this share of the reference (0.01: 1%); the larger allowance counts."""


class JsonSchemaMetric(Section):
    """A JSON Schema the answer must satisfy: exactly one of `file` or `inline`. runner checks the keywords
    type, enum, const, properties, required, additionalProperties, items, minItems, maxItems, minLength,
    maxLength, minimum, maximum, exclusiveMinimum, exclusiveMaximum, anyOf, allOf, oneOf and not (validate
    refuses any other, rather than ignore it)."""

    file: str | None = None
    """A .json file holding the schema, relative to the spec (`{json_schema: schemas/answer.json}` for short)."""
    inline: dict | None = None
    """The schema itself, written in the spec."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return {"anyOf": [{"type": "string", "description": "a schema file"}, handler(core_schema)]}

    @model_validator(mode="after")
    def _exactly_one(self) -> JsonSchemaMetric:
        if (self.file is None) == (self.inline is None):
            raise PydanticCustomError("json_schema", "give exactly one of file or inline")
        return self


class LengthMetric(Section):
    unit: Literal["characters", "words", "tokens"] = "characters"
    """What is counted in each answer; the score is the mean."""


class Nothing(Section):
    """A metric without settings."""


class MetricSpec(Section):
    """One metric: its name, or a mapping from its name to its settings (`{contains: {ignore_case: true}}`)."""

    exact_match: Normalised | None = None
    """1 when the answer equals the reference (or one of a list of references), after normalising."""
    contains: Normalised | None = None
    """1 when the answer contains the reference (or one of them), after normalising."""
    regex: RegexMetric | None = None
    """1 when the answer matches a pattern."""
    numeric: NumericMetric | None = None
    """1 when the last number in the answer is the reference's, within a tolerance."""
    valid_json: Nothing | None = None
    """1 when the whole answer is JSON."""
    json_schema: JsonSchemaMetric | None = None
    """1 when the answer is JSON that satisfies a schema."""
    length: LengthMetric | None = None
    """The answer's length (characters, words or tokens)."""
    loglikelihood: Nothing | None = None
    """The mean log-probability per token of the reference, given the prompt (no generation)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        shorthand = {"type": "string", "enum": list(metric_names.METRICS), "description": "a metric with its defaults"}
        return {"anyOf": [shorthand, handler(core_schema)]}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in metric_names.METRICS:
                raise not_one_of("metric", "unknown metric '{word}'{hint} (metrics: {choices})", value,
                                 metric_names.METRICS)
            return {value: {}}
        if isinstance(value, dict) and len(value) == 1:
            name, settings = next(iter(value.items()))
            if settings is None:
                return {name: {}}
            if name == "regex" and isinstance(settings, str):
                return {name: {"pattern": settings}}
            if name == "json_schema" and isinstance(settings, str):
                return {name: {"file": settings}}
        if not isinstance(value, dict):
            raise PydanticCustomError("metric", "expected a metric name, or {{name: settings}}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> MetricSpec:
        given = [name for name in metric_names.METRICS if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError("metric", "name one metric per entry (found: {given})",
                                      {"given": ", ".join(given) or "none"})
        return self

    @property
    def name(self) -> str:
        return next(name for name in metric_names.METRICS if getattr(self, name) is not None)

    @property
    def settings(self) -> Section:
        return getattr(self, self.name)


class EvalSet(Section):
    """A test set of your own: rows with a prompt and a reference, each answer scored by the metrics."""

    name: Annotated[str, Field(pattern=EVAL_NAME_PATTERN)]
    """Names the results and the gates (`NAME.METRIC >= 0.9`): lowercase letters, digits, '-' and '_'."""
    data: EvalSource
    """The rows: a .jsonl, .csv or .parquet file (relative to the spec), or a source as in `data`."""
    metrics: Annotated[list[MetricSpec], Field(min_length=1)]
    """How each answer is scored: exact_match, contains, regex, numeric, valid_json, json_schema, length,
    loglikelihood."""
    limit: Count | None = None
    """Evaluate only the first N rows."""
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    """Tokens an answer may have; default: evals.generation.max_new_tokens."""
    stop: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    """Answers end at the first of these strings; default: evals.generation.stop."""
    during: bool = True
    """Evaluate it every `evals.every` steps while training, too (with `every`)."""

    @field_validator("metrics")
    @classmethod
    def _once_each(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        names = [metric.name for metric in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PydanticCustomError("metrics", "{names} named twice: results are keyed by metric name",
                                      {"names": ", ".join(repeated)})
        return value


class EvalTask(Section):
    """A task of lm-eval-harness (the `evals` extra, docs/install.md), run on the base and the result."""

    task: Annotated[str, Field(pattern=TASK_PATTERN)]
    """The task's name: one of lm-eval's, or one declared by a task YAML under include_path."""
    name: Annotated[str, Field(pattern=EVAL_NAME_PATTERN)] | None = None
    """Names the results and the gates; default: the task's name."""
    include_path: str | None = None
    """A folder of task YAML files, or one such file, relative to the spec (lm-eval's --include_path). Data
    files a task names are read relative to its YAML's folder."""
    limit: Count | None = None
    """Evaluate only the first N documents (lm-eval's --limit)."""
    num_fewshot: Annotated[int, Field(ge=0, le=64)] | None = None
    """Examples shown before each question (lm-eval's --num_fewshot); default: the task's own."""
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Requests per forward pass (lm-eval's --batch_size)."""

    @model_validator(mode="after")
    def _named(self) -> EvalTask:
        if self.name is None and not re.match(EVAL_NAME_PATTERN, self.task):
            raise PydanticCustomError("eval_name", "the task '{task}' is not a valid eval name; give it a name: "
                                      "lowercase letters, digits, '-' and '_'", {"task": self.task})
        return self

    @property
    def label(self) -> str:
        return self.name or self.task


class GenerationSpec(Section):
    """How the answers of the test sets are generated."""

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    """Tokens an answer may have at most."""
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.0
    """0: greedy decoding (the same answers every time); above 0 samples, seeded by training.seed."""
    stop: Annotated[list[str], Field(max_length=MAX_STOP)] = Field(default_factory=list)
    """An answer ends at the first of these strings (e.g. "\\n"), besides the end-of-sequence token."""
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Prompts answered at once."""
    chat_template: SwitchOrAuto = "auto"
    """Ask through the model's chat template. `auto`: as the training data is rendered (data.chat_template);
    for `runner eval` on a model, whenever its tokenizer has a template."""

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        if any(not text for text in value):
            raise PydanticCustomError("stop", "a stop string may not be empty")
        return value


def _gate(text: str) -> str:
    try:
        parse_gate(text)
    except GateError as error:
        raise PydanticCustomError("gate", "{message}", {"message": str(error)}) from None
    return text


Gate = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_gate)]


class EvalsSpec(Section):
    """What is evaluated on the base model and on the result, side by side; and what the result must reach."""

    sets: list[EvalSet] = Field(default_factory=list)
    """Test sets of your own."""
    tasks: list[EvalTask] = Field(default_factory=list)
    """lm-eval-harness tasks."""
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    """Answer length, stop strings, greedy or sampled, batch size, chat template."""
    every: Count | None = None
    """Steps between evaluations of the sets while training (into metrics.jsonl and the trackers);
    default: only before and after."""
    keep_best: str | None = None
    """`SET.METRIC`: keep the model of the evaluation (every `every` steps, and the end) that scored best on
    it in best/ of the run folder."""
    require: list[Gate] = Field(default_factory=list)
    """Gates: `NAME.METRIC OP VALUE` with OP one of >= > <= < ==, and VALUE a number or `base`, `base + X`,
    `base - X` (the base model's score). A run that misses one fails (kind `gate`), its weights kept, and a
    {job: NAME} spec built on it does not start."""

    @model_validator(mode="after")
    def _names_once(self) -> EvalsSpec:
        names = [item.name for item in self.sets] + [task.label for task in self.tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PydanticCustomError("eval_name", "{names} names two evals: give each its own name",
                                      {"names": ", ".join(repeated)})
        return self

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.sets] + [task.label for task in self.tasks]

    def any(self) -> bool:
        return bool(self.sets or self.tasks)
