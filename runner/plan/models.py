"""The Plan: a frozen, JSON-serialisable record of exactly what a run will do.

The executor accepts nothing else. Every `auto` of the spec is resolved here, with the
rule that chose it, and the inputs are identified by hash so a stale plan is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.confine import Confinement

PLAN_VERSION = 2
"""2: the resolved settings are a typed record (`settings`); 1 held them as a dict of dotted keys
(`resolved`), which a version-1 plan is read into."""

T = TypeVar("T")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resolved(Frozen, Generic[T]):
    """One setting: its value, and why it has that value."""

    value: T
    rule: str
    """`spec` when written in the spec, else the rule that resolved `auto`."""


class ResolvedHardware(Frozen):
    device: Resolved[Literal["cpu", "cuda"]]
    gpus: Resolved[int]
    """Processes on each node."""
    nodes: Resolved[int]
    precision: Resolved[Literal["fp32", "bf16", "fp16"]]
    strategy: Resolved[Literal["ddp", "fsdp"]]
    offload: Resolved[bool]
    """fsdp: the shards live in CPU memory, and the optimizer steps there."""
    gradient_checkpointing: Resolved[bool]
    max_memory_gb: Resolved[float] | None = None
    """The spec's own memory budget, when it set one."""


class ResolvedTraining(Frozen):
    epochs: Resolved[int | float]
    """Whole passes when `auto` chose them: kept an int, as the plan's identity hashed it before this record."""
    max_steps: Resolved[int]
    learning_rate: Resolved[float]
    warmup_ratio: Resolved[float]
    lr_scheduler: Resolved[Literal["cosine", "linear", "constant"]]
    loss_on: Resolved[Literal["completion", "all"]]
    weight_decay: Resolved[float]
    max_grad_norm: Resolved[float | None]
    seed: Resolved[int]
    log_every: Resolved[int]
    batch_size: Resolved[int]
    micro_batch_size: Resolved[int]
    gradient_accumulation: Resolved[int]
    max_length: Resolved[int]
    eval_every: Resolved[int] | None = None
    """Set when the spec has eval data."""


class ResolvedData(Frozen):
    chat_template: Resolved[bool]
    max_rejected: Resolved[float]


class ResolvedOutputs(Frozen):
    dir: Resolved[str]
    save: Resolved[Literal["adapter", "merged", "full"]]
    checkpoint_every: Resolved[int]
    keep_checkpoints: Resolved[int]
    keep_checkpoints_after_success: Resolved[bool]


class ResolvedLora(Frozen):
    alpha: Resolved[float]


class ResolvedQuantize(Frozen):
    compute_dtype: Resolved[Literal["fp32", "bf16", "fp16"]]


class ResolvedTrainable(Frozen):
    lora: ResolvedLora | None = None
    """LoRA training."""
    quantize: ResolvedQuantize | None = None
    """A quantized base."""


class ResolvedSettings(Frozen):
    """Every setting the run uses, each with the rule that chose it: the contract between the planner and
    the executor, read by attribute (`plan.settings.hardware.precision.value`)."""

    hardware: ResolvedHardware
    training: ResolvedTraining
    data: ResolvedData
    outputs: ResolvedOutputs
    trainable: ResolvedTrainable = ResolvedTrainable()
    method: dict[str, Resolved[Any]]
    """The method's section, field by field; the executor reads it into the method's own section model
    (runner.execute.settings), which types and checks it."""

    @classmethod
    def of_keys(cls, entries: dict[str, Resolved], method: str) -> ResolvedSettings:
        """From settings keyed by field path (`training.learning_rate`, `dpo.beta`), as the planner
        records them and a version-1 plan held them."""
        nested: dict[str, Any] = {"method": {}}
        for key, entry in entries.items():
            first, _, rest = key.partition(".")
            if first == method:
                nested["method"][rest] = entry
                continue
            node = nested.setdefault(first, {})
            *parents, last = rest.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = entry.model_dump()  # validated again, against the type the record declares for it
        return cls.model_validate(nested)

    def by_key(self, method: str) -> dict[str, Resolved]:
        """Every setting keyed by its field path, in the record's order: for rendering, trackers, the
        model card and the plan's identity."""
        flat: dict[str, Resolved] = {}

        def walk(prefix: str, node: BaseModel | dict) -> None:
            items = node.items() if isinstance(node, dict) else ((name, getattr(node, name))
                                                                 for name in type(node).model_fields)
            for name, value in items:
                if isinstance(value, Resolved):
                    flat[prefix + name] = value
                elif value is not None:
                    walk(f"{prefix}{name}.", value)

        for section in ("hardware", "training", "data", "outputs", "trainable"):
            walk(f"{section}.", getattr(self, section))
        walk(f"{method}.", self.method)
        return flat


class DeviceFacts(Frozen):
    type: Literal["cpu", "cuda"]
    count: int
    """Devices (processes) the job uses, on all its nodes together."""
    nodes: int = 1
    """Machines the devices are spread over, `count / nodes` on each."""
    names: list[str]
    memory_gb: float
    """Memory of one device (GPU memory, or the machine's RAM for the CPU)."""
    bf16: bool
    """Whether bf16 is supported natively."""
    host_memory_gb: float | None = None
    """CPU memory available on each machine (what CPU offload may fill)."""
    what_if: bool = False
    """Planned for a machine described with --machine, not this one: `runner run` refuses it."""

    @property
    def per_node(self) -> int:
        return self.count // self.nodes


class FileIdentity(Frozen):
    path: str
    sha256: str
    size: int


class DataIdentity(Frozen):
    """One source of rows, as the plan read it: enough to read exactly it again, and to tell it changed."""

    role: Literal["train", "eval"]
    source: str = ""
    """The source as the spec names it (a path, or hub:org/name), with its config and split."""
    spec: dict = Field(default_factory=dict)
    """The spec's entry for this source, as written; resolved again to check the plan is fresh."""
    kind: Literal["file", "folder", "saved", "hub"] = "file"
    """A file; a folder of data files; a save_to_disk folder; a hub dataset in the local cache."""
    path: str
    """The file, or the folder its files are in (for hub datasets: the cached snapshot)."""
    sha256: str
    """The file's sha256; for several files, the sha256 of their names and hashes."""
    files: list[FileIdentity] = Field(default_factory=list)
    """Every file read, in reading order."""
    split: str | None = None
    config: str | None = None
    revision: str | None = None
    """For hub datasets: the commit of the cached snapshot."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Row keys taken from columns of other names ({key: column})."""
    weight: float = 1.0
    rows: int
    usable_rows: int
    epoch_rows: int | None = None
    """Training rows one epoch takes from this source: floor(weight x usable rows + 0.5), less the rows
    that fail to encode (runner.data.mixing)."""
    format: str
    variant: str

    def row_source(self):
        """The source's rows, read from exactly the files planned."""
        from runner.data.sources import RowSource

        return RowSource(self.source or self.path, self.kind, Path(self.path),
                         tuple(Path(f.path) for f in self.files) or (Path(self.path),), self.split, self.config,
                         self.revision, tuple(self.columns.items()), self.weight)


class ModelIdentity(Frozen):
    kind: Literal["local", "gguf", "hub", "offline_copy", "job"]
    """How the base model is found: a folder, a GGUF file, the hub (cache), a packaged GGUF copy of a
    hub model, or another spec's run."""
    reference: str
    """What the spec says (hub id, path, or job:name)."""
    location: str
    """What is loaded: a folder, a file, or a hub id."""
    revision: str | None = None
    """For hub models: the commit found in the cache."""
    files: list[FileIdentity] = Field(default_factory=list)
    job_run: str | None = None
    """For {job: NAME}: the run directory whose output is used."""
    job_manifest_sha256: str | None = None
    trust_remote_code: bool = False
    """Whether the spec allows this model's own Python code to run."""


class Inputs(Frozen):
    spec_path: str
    """The file the spec was read from (its sha256 is checked before a run)."""
    spec_sha256: str
    spec_source: str | None = None
    """The spec as its author knows it, when spec_path holds a copy of its bytes (the watch daemon
    plans the snapshot it admitted): relative paths and {job: NAME} resolve beside it."""
    data: list[DataIdentity]
    base_model: ModelIdentity
    reward_model: ModelIdentity | None = None
    teacher_model: ModelIdentity | None = None
    versions: dict[str, str]
    """runner, python and library versions at planning time."""

    @property
    def spec_folder(self) -> Path:
        """Where the spec's relative paths (data, models, reward modules) and {job: NAME} resolve."""
        return Path(self.spec_source or self.spec_path).parent


class ModelFacts(Frozen):
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_positions: int | None
    total_parameters: int
    tied_embeddings: bool


class TrainableRow(Frozen):
    """A group of parameters with one status: consecutive layers of one family, or a top-level module."""

    layers: str
    """`0-27`, `29`, or `-` for parameters outside the blocks."""
    family: str
    status: Literal["trained", "frozen", "lora"]
    parameters: int
    storage: str = ""
    """How the group's base weights are stored where that is not the run's dtype: `nf4`, `fp4` or `int8` for a
    quantized base; empty otherwise."""
    names: str
    """The parameter names of the group, with the layer index replaced by N."""


class LoraPlan(Frozen):
    targets: list[str]
    """Module names that receive adapters."""
    r: int
    alpha: float
    dropout: float
    rslora: bool
    adapter_parameters: int
    """A and B matrices, and with DoRA the magnitude vectors."""
    dora: bool = False
    loraplus_lr_ratio: float | None = None
    """LoRA+: the learning rate of B matrices (and one-dimensional trained weights) over the others'."""

    @property
    def scaling(self) -> float:
        """What the adapter's product is multiplied by: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (self.r ** 0.5 if self.rslora else self.r)


class QuantizedBase(Frozen):
    """The frozen base stored quantized (trainable.quantize, resolved)."""

    bits: Literal[4, 8]
    type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bf16", "fp16", "fp32"]
    quantized: list[str]
    """The weights stored quantized (every linear layer of the blocks; not embeddings, norms or the head)."""
    stored_bytes: int
    """What those weights take, quantization constants included."""
    requantized_gguf: bool = False
    """The base is a GGUF file, dequantised to fp32 before it is quantized again."""

    def storage(self):
        from runner.quantization import Storage

        return Storage(self.bits, self.type, self.double_quant, self.compute_dtype)


class TrainablePlan(Frozen):
    mode: Literal["full", "freeze", "lora"]
    total_parameters: int
    trainable_parameters: int
    """Parameters that receive gradients: trained in full plus LoRA adapters."""
    trainable_percent: float
    table: list[TrainableRow]
    trained: list[str]
    """Every parameter name trained in full; the executor checks it applies the same set."""
    lora: LoraPlan | None = None
    quantized: QuantizedBase | None = None
    """QLoRA: how the frozen base is stored."""
    notes: list[str] = Field(default_factory=list)
    """What a reader must know: tied weights, new heads, depth of backpropagation."""
    lowest_trained_layer: int | None = None
    """Gradients flow down to this block; activations below it need not be kept."""


class TokenSpan(Frozen):
    text: str
    trained: bool
    tokens: int


class MaskedExample(Frozen):
    line: int | None = None
    """Line of the row in its file (JSONL, CSV)."""
    row: int | None = None
    """Row index of the row in its file (tabular files; from 0)."""
    source: str | None = None
    """The source the row comes from, when the training data has several."""
    part: str = "example"
    """`example`; for preference data `chosen` or `rejected`; for RL `prompt`."""
    spans: list[TokenSpan]
    tokens: int
    trained_tokens: int


class LossMaskPreview(Frozen):
    rule: str
    """Which tokens the loss covers, in words."""
    examples: list[MaskedExample]
    chat_template: bool
    """Whether rows are rendered through the model's chat template."""
    generation_tokens: int | None = None
    """For ppo/grpo: tokens generated per prompt at most."""


class TokenStats(Frozen):
    rows_measured: int
    mean_tokens: float
    max_tokens: int
    truncated_rows: int
    """Measured rows longer than max_length (their end is cut)."""
    unusable_rows: int
    """Measured rows with no trained token left after truncation, or that fail to encode."""


class Steps(Frozen):
    rows: int
    batch_size: int
    micro_batch_size: int
    devices: int
    gradient_accumulation: int
    steps_per_epoch: int
    epochs: float
    total_steps: int
    warmup_steps: int
    eval_every: int | None
    checkpoint_every: int
    tokens: TokenStats


class MemoryItem(Frozen):
    name: str
    bytes: int
    note: str = ""


class MemoryEstimate(Frozen):
    items: list[MemoryItem]
    """The terms of the moment of the run that needs the most (`peak`); they add up to total_bytes."""
    total_bytes: int
    without_checkpointing_bytes: int
    with_checkpointing_bytes: int
    budget_bytes: int
    budget_source: str
    fits: bool
    advice: list[str] = Field(default_factory=list)
    measures: str = ""
    """What the estimate predicts, as measured: the process's peak resident memory on a CPU, the memory the
    GPU gives out on a GPU."""
    peak: str = "a training step"
    """The moment `items` describe."""
    moments: list[MemoryItem] = Field(default_factory=list)
    """Every moment of the run that was estimated, with its total (loading, a training step, writing a
    checkpoint, saving)."""
    unknown: list[str] = Field(default_factory=list)
    """What cannot be known before loading, and how the estimate errs for it."""


class DiskItem(Frozen):
    name: str
    bytes: int
    note: str = ""
    kept: bool = True
    """Still there once the run has succeeded."""


class DiskEstimate(Frozen):
    """What a run writes: at most `peak_bytes` while it runs, `kept_bytes` after it succeeded."""

    items: list[DiskItem]
    peak_bytes: int
    kept_bytes: int


class RewardTermPlan(Frozen):
    name: str
    """The term's name in metrics (rewards/NAME/mean)."""
    weight: float
    what: str
    """What it scores, in words."""


class RewardPlan(Frozen):
    """The reward of an RL method, as a formula over its named terms."""

    formula: str
    terms: list[RewardTermPlan]


class MethodOption(Frozen):
    """A method option with its documented default and where it comes from."""

    name: str
    value: Any
    default: Any
    origin: str


class EvalItem(Frozen):
    """One evaluation as planned: what it reads, what it asks of the model, and what identifies it."""

    name: str
    kind: Literal["set", "task"]
    """set: a test set of the spec's own; task: an lm-eval-harness task."""
    data: DataIdentity | None = None
    """A set's rows, exactly the files read (role `eval`, format `prompt_reference`)."""
    task: str | None = None
    task_file: str | None = None
    """The task YAML that declares it (None: found by lm-eval among its own)."""
    output_type: str | None = None
    """The task's kind of request: multiple_choice, generate_until, loglikelihood, ..."""
    dataset: str | None = None
    """The hub dataset a task reads (from the datasets cache), or None for local files."""
    metrics: list[str]
    """A set's metrics; a task's metric_list (empty when the task does not list them)."""
    rows: int | None
    """Rows (documents, for a task) evaluated; None when unknown before running (a hub task without limit)."""
    generates: bool
    max_new_tokens: int
    """Tokens an answer may have."""
    prompt_tokens: int | None
    """Prompt tokens of all rows together (and reference tokens, for loglikelihood), as the model reads them."""
    new_tokens: int | None
    """Tokens generated at most: rows x max_new_tokens."""
    during: bool = False
    """Evaluated every evals.every steps while training, too."""
    content_sha256: str
    """What is evaluated, hashed (rows, settings, schema and task files, the library versions that score):
    with the base model's identity, the key of the base's cached results."""


class EvalPlan(Frozen):
    """The evals of a run: what runs on which model, and about what it costs next to training."""

    items: list[EvalItem]
    chat_template: bool
    """Whether the test sets' prompts go through the chat template (as the training data does, by default)."""
    every: int | None
    """Steps between evaluations of the `during` sets while training."""
    during_evaluations: int
    """How often the `during` sets are evaluated while training (besides before and after)."""
    keep_best: str | None = None
    require: list[str] = Field(default_factory=list)
    base_cached: list[str] = Field(default_factory=list)
    """Evals whose base results are in runner's cache already (the base is not evaluated again)."""
    token_work: dict[str, int] = Field(default_factory=dict)
    """Tokens through the model, as forward-pass equivalents: training (x3 for the backward pass), and the
    evals on the base, while training and on the result (a generated token counts DECODE_COST)."""
    share_of_training: float | None = None
    """Estimated eval time over training time (from token_work; None when a task's size is unknown)."""
    notes: list[str] = Field(default_factory=list)


class Plan(Frozen):
    plan_version: Literal[2] = PLAN_VERSION
    created_at: str
    name: str
    method: str
    """A registered method (runner.methods.registry); the executor refuses any other at start-up."""
    spec: dict
    """The spec as validated, with its autos unresolved; `settings` holds the resolutions."""
    settings: ResolvedSettings
    device: DeviceFacts
    model: ModelFacts
    trainable: TrainablePlan
    loss_mask: LossMaskPreview
    steps: Steps
    memory: MemoryEstimate
    disk: DiskEstimate | None = None
    """What the run writes (run folder and runner's cache)."""
    inputs: Inputs
    training_path: str
    """Which implementation runs the method (e.g. TRL DPOTrainer), and how."""
    objective: str = ""
    """The loss the method minimises, in words."""
    reward: RewardPlan | None = None
    """For methods trained against a reward: what a completion scores."""
    options: list[MethodOption] = Field(default_factory=list)
    """The method's options that the plan lists with their defaults and origins (the GRPO family's)."""
    confinement: Confinement | None = None
    """What the run may read for the spec (runner.confine): set when the plan was made under one (by
    the watch daemon), and enforced by `runner run --plan` wherever it runs."""
    evals: EvalPlan | None = None
    """The spec's evals, planned (None without an evals section)."""

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """A version-1 plan (a queued job's, a run's to resume) held its settings as dotted keys."""
        if isinstance(data, dict) and data.get("plan_version") == 1 and isinstance(data.get("resolved"), dict):
            entries = {key: Resolved.model_validate(entry) for key, entry in data["resolved"].items()}
            data = {key: value for key, value in data.items() if key != "resolved"}
            data["plan_version"] = PLAN_VERSION
            data["settings"] = ResolvedSettings.of_keys(entries, data.get("method", ""))
        return data

    def packs(self) -> bool:
        """The method's loop packs rows into blocks (its `packing`, resolved on)."""
        packing = self.settings.method.get("packing")
        return bool(packing and packing.value)

    def settings_by_key(self) -> dict[str, Resolved]:
        """Every setting keyed by its field path (`training.learning_rate`, `dpo.beta`)."""
        return self.settings.by_key(self.method)

    def trainable_policy(self):
        from runner.spec.models import TrainableSpec

        return TrainableSpec.model_validate(self.spec["trainable"]).policy()
