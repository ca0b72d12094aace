"""The job spec, version 1: pydantic models with a docstring per field.

The docstring under each field is its documentation (read by `runner.spec.fielddocs` for
the JSON Schema and for hints).

Models check each value on its own; rules that relate several fields live in
`runner.spec.rules`, so that every broken rule is reported, not just the first.
Every hyperparameter that has a sensible resolution accepts `auto`; the planner
resolves it and records the rule it used.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WrapValidator, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner import formats, trainable
from runner.methods import registry
from runner.spec.evals import EvalsSpec
from runner.spec.fields import (NAME_PATTERN, Auto, Count, CountOrAuto, ModelSource, PositiveOrAuto, Section,
                                SourceOfRows, SwitchOrAuto, or_auto)
from runner.trackers import TRACKER_NAMES

DataFormat = Literal[("auto", *formats.FORMATS)]  # type: ignore[valid-type]
MAX_OUTPUTS_DIR = 120


class DataSource(SourceOfRows):
    """One source of rows: exactly one of `path` or `hub`. A plain string is a path."""

    ROW_KEYS = tuple(sorted(formats.KNOWN_KEYS))
    EXTRA_COLUMNS = True

    path: str | None = None
    """A .jsonl, .csv, .parquet or .arrow file, a `save_to_disk` folder, or a folder of such files
    (split as on the hub: by the README's configs, else by names like train-*.parquet); relative to the
    spec file."""
    hub: str | None = None
    """A dataset on the Hugging Face hub (`org/name`), read from the local hub cache and never downloaded:
    fetch it first with `hf download org/name --repo-type dataset`."""
    revision: str | None = None
    """A branch, tag or commit of the hub dataset (default: main); the plan records the commit. Only
    with `hub`."""
    config: str | None = None
    """The configuration (subset) of a dataset whose README defines several; default: its default one."""
    split: str | None = None
    """The split to read (train, validation, test, ...); default: the only one, or `train` for data.train."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Row keys taken from columns of other names, {key: column}, e.g. {prompt: question, completion:
    answer}; when given, rows hold these keys only (keep another column, such as one a reward check reads,
    by naming it: {prompt: question, answer: answer})."""
    weight: Annotated[float, Field(gt=0, le=100)] = 1.0
    """Times each usable row of this source is used per epoch (data.train only): 2 uses every row twice,
    0.5 half of them (chosen from training.seed). An epoch is every source's rows taken so, shuffled
    together; the plan shows each source's rows and share."""


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class _OneOrMany:
    """The JSON Schema of a list that may be written as its one item."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        many = handler(core_schema)
        return {"anyOf": [many["items"], many]}


DataSources = Annotated[list[DataSource], BeforeValidator(_as_list), Field(min_length=1), _OneOrMany()]


class DataSpec(Section):
    train: DataSources
    """Training rows: a path (`data/x.jsonl`), one source, or a list of sources mixed by their weights."""
    eval: DataSources | None = None
    """Held-out rows in the same format (one source or several), for eval loss and before/after samples."""
    format: DataFormat = "auto"
    """Row shape; `auto` detects it from the rows and requires every row (of every source) to agree."""
    max_rejected: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of rows that may be unusable; they go to rejected.jsonl. Above it, the job fails."""
    chat_template: SwitchOrAuto = "auto"
    """Render rows through the model's chat template (text prompts become a user turn, completions an
    assistant turn). `auto`: whenever the tokenizer has a template. Chat rows always use it."""

    def sources(self, role: str) -> list[DataSource]:
        return list(getattr(self, role) or [])


def _check_layers(value: Any, handler: Any) -> Any:
    try:
        trainable.parse_layers(value)  # the parser knows every form, and says what is wrong
    except trainable.SelectionError as error:
        raise PydanticCustomError("layers", "{message}", {"message": str(error)}) from None
    return handler(value)


LayersValue = Annotated[int | str | list[int | str], WrapValidator(_check_layers)]


class LoraSpec(Section):
    r: Count = 16
    """Adapter rank: the size of the low-rank update."""
    alpha: PositiveOrAuto = "auto"
    """Scale of the update is alpha / r; `auto` is 2 * r."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Dropout on the adapter input."""
    rslora: bool = False
    """Scale by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA): higher ranks then learn as fast as
    low ones."""
    dora: bool = False
    """DoRA: split each adapted weight into a magnitude (one trained number per output) and a direction that
    the adapter updates; closer to full fine-tuning, at some speed."""
    loraplus_lr_ratio: Annotated[float, Field(ge=1)] | None = None
    """LoRA+: the B matrices (and other one-dimensional trained weights, as PEFT groups them) learn at this
    multiple of the learning rate; the LoRA+ paper suggests 16. Off when not given."""


class QuantizeSpec(Section):
    """The frozen base stored quantised by bitsandbytes (QLoRA); only the LoRA adapters train."""

    bits: Literal[4, 8]
    """4: 4-bit blocks of 64 weights (QLoRA); 8: LLM.int8."""
    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit code: nf4 (normal float, QLoRA's) or fp4."""
    double_quant: bool = True
    """4-bit: quantise the block scales too (about 0.4 bits a weight less)."""
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """4-bit: the dtype the weights are dequantised to for each matrix product; `auto` is the run's precision."""
    requantize_gguf: bool = False
    """A GGUF base is already quantised in its own format: it is dequantised to fp32 first, then quantised again
    (a second rounding). Set true to accept that."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return {"anyOf": [{"enum": [4, 8], "description": "the bits, with the defaults"}, handler(core_schema)]}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"bits": value} if isinstance(value, int) and not isinstance(value, bool) else value


class TrainableSpec(Section):
    mode: Literal["full", "freeze", "lora"] = "full"
    """full: every weight; freeze: only the selection below; lora: adapters on the selection."""
    layers: LayersValue = "all"
    """Blocks to train: all, last:N, first:N, "20-23", or a list like [0, 3, "5-7"]."""
    modules: list[str] = Field(default_factory=list)
    """Inside those blocks: families (attention, mlp, norm) or parameter-name globs.
    Empty: every parameter of the block (freeze) or attention and mlp (lora)."""
    also: list[str] = Field(default_factory=list)
    """Extra parameters trained in full, anywhere: families (embeddings, lm_head, norm) or globs."""
    lora: LoraSpec | None = None
    """LoRA settings; only with mode: lora (defaults apply when omitted)."""
    quantize: QuantizeSpec | None = None
    """Store the frozen base quantised (QLoRA with `4`; only with mode: lora): `quantize: 4`, or
    {bits: 4, type: nf4, double_quant: true, compute_dtype: auto}. Needs bitsandbytes: the `qlora`
    extra (docs/install.md)."""

    @field_validator("modules", "also")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                trainable.check_module_pattern(pattern)
            except trainable.SelectionError as error:
                raise PydanticCustomError("module_pattern", "{message}", {"message": str(error)}) from None
        return patterns

    def policy(self) -> trainable.TrainablePolicy:
        return trainable.TrainablePolicy(self.mode, trainable.parse_layers(self.layers),
                                         tuple(self.modules), tuple(self.also))


class TrainingSpec(Section):
    epochs: PositiveOrAuto = "auto"
    """Passes over the training data; `auto` picks from the data size."""
    max_steps: Count | None = None
    """Stop after this many optimizer steps; overrides epochs."""
    learning_rate: PositiveOrAuto = "auto"
    """Peak learning rate; `auto` depends on the method and trainable mode."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up."""
    warmup_ratio: Annotated[Annotated[float, Field(ge=0, le=0.5)] | Auto,
                            or_auto("a share of the steps between 0 and 0.5")] = "auto"
    """Share of the steps spent warming the learning rate up."""
    batch_size: CountOrAuto = "auto"
    """Global batch, in sequences (or pairs, or prompts), per optimizer step."""
    micro_batch_size: CountOrAuto = "auto"
    """Sequences per device per forward pass; the rest is gradient accumulation."""
    max_length: CountOrAuto = "auto"
    """Tokens per sequence; longer rows are truncated, and the plan counts them."""
    loss_on: Literal["completion", "all"] = "completion"
    """SFT loss mask: completion (the answer, or assistant turns) or all tokens."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """AdamW weight decay."""
    max_grad_norm: Annotated[float, Field(gt=0)] | None = 1.0
    """Gradient clipping; null turns it off."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed for data order, initialisation of new weights, and sampling."""
    eval_every: CountOrAuto = "auto"
    """Steps between evaluations (with data.eval); `auto` is once per epoch."""
    log_every: Count = 1
    """Steps between metric lines."""


class HardwareSpec(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` uses a GPU when there is one."""
    gpus: CountOrAuto = "auto"
    """Processes (one per GPU) on each node; more than one runs data-parallel. `auto`: every visible GPU, or 1
    process on the CPU."""
    nodes: Count = 1
    """Machines the job runs on, each with `gpus` processes; more than one joins one torchrun rendezvous
    (`runner run --plan --rendezvous HOST:PORT` on every node, or `runner submit` on Slurm)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 where supported, else fp16 on GPU, fp32 on CPU."""
    gradient_checkpointing: SwitchOrAuto = "auto"
    """Recompute activations in the backward pass; `auto` turns it on when memory needs it."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How the processes share the model: `ddp`, a full copy on each (fastest when it fits); `fsdp`,
    weights, gradients and optimizer states sharded over them (FSDP2). `auto`: ddp when the estimate
    fits, else fsdp."""
    offload: SwitchOrAuto = "auto"
    """With fsdp on GPUs: keep the sharded weights, gradients and optimizer states in CPU memory and
    step the optimizer there (slower; for models that fit no other way). `auto`: only when nothing
    else fits."""
    max_memory_gb: Annotated[float, Field(gt=0)] | None = None
    """Memory per device the job may use; the plan fails when the estimate is above it."""


class OutputsSpec(Section):
    dir: str = "runs"
    """Runs go to <run root>/<dir>/<name>/<run-id>; relative, inside the run root."""
    save: Literal["auto", "adapter", "merged", "full"] = "auto"
    """adapter (LoRA only), merged (LoRA folded into the base), or full weights; `auto`: adapter for
    LoRA, full otherwise."""
    checkpoint_every: CountOrAuto = "auto"
    """Steps between checkpoints; `auto` is about five per run, at least 50 steps apart."""
    keep_checkpoints: Count = 2
    """Newest checkpoints kept while the run goes; older ones are deleted."""
    keep_checkpoints_after_success: bool = False
    """Keep the checkpoints once the run has succeeded (they are there to resume an unfinished run; by default
    they are deleted after the final model is saved)."""
    report_to: list[Literal[TRACKER_NAMES]] = Field(default_factory=list)
    """Experiment trackers that get every metric of metrics.jsonl: tensorboard (event files in the run
    folder), mlflow ($MLFLOW_TRACKING_URI, else sqlite:///<run root>/mlflow.db), wandb (offline unless
    $WANDB_MODE says otherwise). Each is an extra of runner-finetune: `runner validate` prints the command
    that installs it."""

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("report_to", "name each tracker once")
        return value

    @field_validator("dir")
    @classmethod
    def _inside_run_root(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", value) or ".." in parts or not value.strip():
            raise PydanticCustomError(
                "outputs_dir", "'{value}' leaves the run root; use a relative folder like 'runs'",
                {"value": value})
        if len(value) > MAX_OUTPUTS_DIR or not value.isprintable():
            raise PydanticCustomError(
                "outputs_dir", "outputs.dir must be printable and at most {limit} characters (run directories "
                "and their files go below it)", {"limit": MAX_OUTPUTS_DIR})
        return value


class JobSpec(Section):
    """A fine-tuning job: what to train, on what, how, and where it goes. Each registered method adds its
    own section: a spec validates against its method's model (`spec_model`), the JSON schema shows them all
    (`schema_model`)."""

    version: Literal[1]
    """Spec language version; always 1."""
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lowercase letters, digits and '-'; names the run directory and lets other specs refer to this one."""
    description: str | None = None
    """Free text for people reading the spec."""
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    """The watch daemon starts queued jobs by priority (higher first), then in order of arrival. It changes
    when a job runs, not what it trains: runs that differ only in priority are the same run."""
    method: str
    """How the model learns (the choices are the registered methods)."""
    base_model: ModelSource
    """The model to start from: hub id, local path, .gguf file, or {job: other-spec}."""
    data: DataSpec
    """Training and evaluation data."""
    trainable: TrainableSpec = Field(default_factory=TrainableSpec)
    """Which weights change."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimisation settings."""
    samples: list[str] = Field(default_factory=list)
    """Prompts answered by the base and the trained model at the end of the run."""
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    """Where and how it runs."""
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    """What is written, and where."""
    evals: EvalsSpec | None = None
    """Evaluations of the base model and the result, side by side, and gates the result must pass (docs/evals.md)."""

    def descriptor(self) -> registry.MethodDescriptor:
        return registry.get(self.method)

    def method_section(self) -> Section | None:
        """This method's settings: the spec's section, or its defaults when the method needs none given."""
        return getattr(self, self.method, None) or self.descriptor().default_section()

    def reward_source(self):
        """The declared reward (runner.rewards.spec.DeclaredReward) of a method trained against one, else None."""
        return getattr(self.method_section(), "reward", None)

    def teacher_source(self) -> ModelSource | None:
        """The teacher model of a method that distils one, else None."""
        return getattr(self.method_section(), "teacher", None)


@functools.cache
def spec_model(method: str | None) -> type[JobSpec]:
    """The model a spec of `method` validates against: JobSpec with the registered methods as the `method`
    choices and that method's section. Checking a spec reads its own method's descriptor only (no other
    method's section is imported or built: a tenth of validate's time); a section of another method in it is
    not a field here, and `rules.sections_match_method` says whose it is.
    None, for a spec whose method is missing or not registered (passed as None, so that misspellings do not
    each make a model the cache keeps): the model with every method's section. That spec is invalid already,
    and whatever section it holds is still checked, every mistake at once."""
    if method is None:
        return schema_model()
    return _with_sections((registry.get(method),), method_doc=None)


@functools.cache
def schema_model() -> type[JobSpec]:
    """JobSpec with every registered method's section: the JSON schema and the field documentation."""
    methods = registry.descriptors()
    return _with_sections(methods, method_doc="\n".join(f"{d.name}: {d.summary}" for d in methods))


def _with_sections(methods: tuple[registry.MethodDescriptor, ...], method_doc: str | None) -> type[JobSpec]:
    choices = Literal[registry.names()]  # type: ignore[valid-type]
    sections = {d.name: (d.section | None, Field(default=None, description=f"Settings for method {d.name}."))
                for d in methods}
    return create_model("JobSpec", __base__=JobSpec, __module__=__name__,
                        method=(choices, Field(description=method_doc)), **sections)


SECTIONS: dict[str, type[Section]] = {
    "base_model": ModelSource, "data": DataSpec, "trainable": TrainableSpec, "training": TrainingSpec,
    "hardware": HardwareSpec, "outputs": OutputsSpec, "evals": EvalsSpec,
}
"""The sections every spec may have; a method's own section comes from its descriptor."""
