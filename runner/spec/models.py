"""The job spec, version 1: pydantic models with a docstring per field.

The docstring under each field is its documentation (read by `runner.spec.fielddocs` for
the JSON Schema and for hints).

Models check each value on its own; rules that relate several fields live in
`runner.spec.rules`, so that every broken rule is reported, not just the first.
Every hyperparameter that has a sensible resolution accepts `auto`; the planner
resolves it and records the rule it used.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner import trainable
from runner.trackers import TRACKER_NAMES

METHODS = ("sft", "dpo", "reward", "ppo", "grpo")
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
MAX_OUTPUTS_DIR = 120
FUNCTION_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _or_auto(expected: str) -> WrapValidator:
    """Report a bad `X | "auto"` value as one clear error instead of one per union member."""

    def validate(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("auto_or", "expected {expected} or 'auto', got {got}",
                                      {"expected": expected, "got": repr(value)}) from None

    return WrapValidator(validate)


Auto = Literal["auto"]
CountOrAuto = Annotated[Annotated[int, Field(ge=1)] | Auto, _or_auto("a whole number >= 1")]
PositiveOrAuto = Annotated[Annotated[float, Field(gt=0)] | Auto, _or_auto("a number > 0")]
SwitchOrAuto = Annotated[bool | Auto, _or_auto("true or false")]
Count = Annotated[int, Field(ge=1)]


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
        given = [key for key in ("hub", "path", "job") if getattr(self, key) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "model_source", "give exactly one of hub, path or job (found: {given})",
                {"given": ", ".join(given) or "none"})
        if self.revision is not None and self.hub is None:
            raise PydanticCustomError("model_source", "revision applies to hub models only")
        return self

    @field_validator("hub")
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        if value is not None and (not HUB_ID_PATTERN.match(value) or ".." in value or "--" in value):
            raise PydanticCustomError(
                "hub_id", "'{value}' is not a hub id (expected 'org/name'); "
                "for a local folder write ./{value}", {"value": value})
        return value

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


class DataSpec(Section):
    train: str
    """Training rows, JSONL, relative to the spec file."""
    eval: str | None = None
    """Held-out rows in the same format, for eval loss and before/after samples."""
    format: Literal["auto", "messages", "prompt_completion", "text", "preference", "prompt_only"] = "auto"
    """Row shape; `auto` detects it from the rows and requires every row to agree."""
    max_rejected: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of rows that may be unusable; they go to rejected.jsonl. Above it, the job fails."""
    chat_template: SwitchOrAuto = "auto"
    """Render rows through the model's chat template (text prompts become a user turn, completions an
    assistant turn). `auto`: whenever the tokenizer has a template. Chat rows always use it."""


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
    """Scale by alpha / sqrt(r) (rank-stabilised LoRA)."""


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
                            _or_auto("a share of the steps between 0 and 0.5")] = "auto"
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


class SftSection(Section):
    packing: SwitchOrAuto = "auto"
    """Pack rows into full blocks with per-document attention; `auto` lets the planner decide."""


class DpoSection(Section):
    beta: Annotated[float, Field(gt=0)] = 0.1
    """Strength of the pull towards the reference model."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """DPO loss variant."""
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    """Assumed share of mislabelled pairs (robust/cDPO)."""


class RewardSection(Section):
    center_rewards_coefficient: Annotated[float, Field(ge=0)] | None = None
    """Penalty pulling rewards towards zero mean; null turns it off."""


class RewardSource(Section):
    """A reward model, or a Python function named explicitly (which runs as code)."""

    model: ModelSource | None = None
    """A reward model: {job: name} of a `reward` spec, {path: dir}, or a hub id."""
    function: str | None = None
    """`module:function`, imported and called with (prompts, completions) -> list of floats.
    This executes code from your environment."""

    @field_validator("function")
    @classmethod
    def _function(cls, value: str | None) -> str | None:
        if value is not None and not FUNCTION_PATTERN.match(value):
            raise PydanticCustomError("reward_function", "'{value}' is not 'module:function'", {"value": value})
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> RewardSource:
        if (self.model is None) == (self.function is None):
            raise PydanticCustomError("reward_source", "give exactly one of model or function")
        return self


class PpoSection(Section):
    reward: RewardSource
    """Where scores come from."""
    kl_coef: Annotated[float, Field(ge=0)] = 0.05
    """Weight of the KL penalty towards the reference model."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """k1: logp - ref_logp; k3: exp(-d) - 1 + d (unbiased, non-negative)."""
    cliprange: Annotated[float, Field(gt=0)] = 0.2
    """Policy ratio clip."""
    cliprange_value: Annotated[float, Field(gt=0)] = 0.2
    """Value clip around the rollout's values."""
    vf_coef: Annotated[float, Field(ge=0)] = 0.1
    """Weight of the value loss."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Discount."""
    lam: Annotated[float, Field(ge=0, le=1)] = 0.95
    """GAE lambda."""
    num_ppo_epochs: Count = 4
    """Optimisation passes over each rollout batch."""
    num_mini_batches: Count = 1
    """Optimizer steps per PPO epoch; must divide the batch."""
    response_length: Count = 53
    """Tokens generated per prompt at most."""
    temperature: Annotated[float, Field(gt=0)] = 0.7
    """Sampling temperature; logprobs use the same one."""
    missing_eos_penalty: Annotated[float, Field(gt=0)] | None = None
    """Subtracted from the score of responses that never stop."""
    whiten_rewards: bool = False
    """Whiten per-token rewards before GAE (needs minibatches of 8 or more)."""
    total_episodes: Count | None = None
    """Prompts to roll out in all; null is epochs * rows."""
    value_model: Literal["auto", "separate", "shared"] = "auto"
    """separate: its own model from the reward model; shared: a second adapter (LoRA only)."""
    num_sample_generations: Annotated[int, Field(ge=0)] = 10
    """Times during training to log sample generations."""


class GrpoSection(Section):
    reward: RewardSource
    """Where scores come from."""
    num_generations: Annotated[int, Field(ge=2)] = 8
    """Completions per prompt; advantages are relative within the group."""
    max_completion_length: Count = 256
    """Tokens generated per completion at most."""
    temperature: Annotated[float, Field(gt=0)] = 1.0
    """Sampling temperature."""
    beta: Annotated[float, Field(ge=0)] = 0.0
    """KL weight towards the reference; 0 loads no reference model."""
    epsilon: Annotated[float, Field(gt=0)] = 0.2
    """Clip range of the policy ratio."""


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
    """Newest checkpoints kept; older ones are deleted."""
    report_to: list[Literal[TRACKER_NAMES]] = Field(default_factory=list)
    """Experiment trackers that get every metric of metrics.jsonl: tensorboard (event files in the run
    folder), mlflow ($MLFLOW_TRACKING_URI, else sqlite:///<run root>/mlflow.db), wandb (offline unless
    $WANDB_MODE says otherwise). Each is an extra: pip install 'runner-finetune[tensorboard]'."""

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
    """A fine-tuning job: what to train, on what, how, and where it goes."""

    version: Literal[1]
    """Spec language version; always 1."""
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lowercase letters, digits and '-'; names the run directory and lets other specs refer to this one."""
    description: str | None = None
    """Free text for people reading the spec."""
    method: Literal["sft", "dpo", "reward", "ppo", "grpo"]
    """sft: supervised; dpo: preference pairs; reward: a reward model; ppo / grpo: reinforcement learning."""
    base_model: ModelSource
    """The model to start from: hub id, local path, .gguf file, or {job: other-spec}."""
    data: DataSpec
    """Training and evaluation data."""
    trainable: TrainableSpec = Field(default_factory=TrainableSpec)
    """Which weights change."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimisation settings."""
    sft: SftSection | None = None
    """Settings for method sft."""
    dpo: DpoSection | None = None
    """Settings for method dpo."""
    reward: RewardSection | None = None
    """Settings for method reward (training a reward model)."""
    ppo: PpoSection | None = None
    """Settings for method ppo; needs a reward source."""
    grpo: GrpoSection | None = None
    """Settings for method grpo; needs a reward source."""
    samples: list[str] = Field(default_factory=list)
    """Prompts answered by the base and the trained model at the end of the run."""
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    """Where and how it runs."""
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    """What is written, and where."""

    def method_section(self) -> Section | None:
        """This method's settings; sft, dpo and reward fall back to their defaults."""
        section = getattr(self, self.method)
        if section is None and self.method in ("sft", "dpo", "reward"):
            return SECTION_MODELS[self.method]()
        return section


SECTION_MODELS: dict[str, type[Section]] = {
    "sft": SftSection, "dpo": DpoSection, "reward": RewardSection, "ppo": PpoSection, "grpo": GrpoSection,
}
SECTIONS: dict[str, type[Section]] = {
    "base_model": ModelSource, "data": DataSpec, "trainable": TrainableSpec, "training": TrainingSpec,
    "hardware": HardwareSpec, "outputs": OutputsSpec, **SECTION_MODELS,
}
