"""The result manifest: what was trained, on what, with which code, and what came out.

Written atomically at every state change of a run (so a crash leaves the last true
state), read by `runner status`, the daemon and `{job: NAME}` references. No torch here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.failures import FAILURE_KINDS
from runner.plan.models import ModelIdentity, Plan

MANIFEST_VERSION = 1
RunState = Literal["running", "succeeded", "failed", "interrupted"]
FailureKind = Literal[FAILURE_KINDS]  # runner.failures: one vocabulary, each kind documented there


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunError(Record):
    kind: FailureKind
    """How it failed: one of runner.failures.Failure (plan, stale, data, oom, runtime, diverged, interrupted,
    integrity, killed, timeout, gate); a gate's run keeps its weights."""
    message: str
    hint: str | None = None
    traceback: str | None = None
    """The last lines of the traceback, for runtime errors."""


class Attempt(Record):
    number: int
    started_at: str
    finished_at: str | None = None
    state: RunState | Literal["killed"] = "running"
    """`killed`: the process vanished (kill -9, a reboot, the OOM killer) without recording an end."""
    resumed_from_step: int = 0
    """0 for a fresh start; else the checkpoint step it resumed from."""
    pid: int
    host: str
    layout: str | None = None
    """How this attempt was spread: device type and count, strategy (`cpu x2, fsdp`). Attempts of one
    run may differ: a checkpoint resumes on any number of devices."""


class DataRecord(Record):
    """One source of rows, as the run read it."""

    role: Literal["train", "eval"]
    source: str = ""
    """The source as the spec names it (a path, or hub:org/name), with its config and split."""
    kind: str = "file"
    """file | folder | saved (a save_to_disk folder) | hub"""
    path: str
    """The file, or the folder of its files (for hub datasets: the cached snapshot)."""
    revision: str | None = None
    """For hub datasets: the commit read."""
    sha256: str
    """The file's sha256; for several files, the sha256 of their names and hashes (the plan lists each)."""
    weight: float = 1.0
    rows: int
    used_rows: int
    """Examples one epoch took from this source: its usable rows x its weight (repeats included)."""
    rejected_rows: int
    """Rows that could not be used (listed with their line or row index and the reason in rejected.jsonl)."""


class Environment(Record):
    python: str
    platform: str
    host: str
    versions: dict[str, str]
    cuda: str | None = None
    gpus: list[str] = Field(default_factory=list)


class GitRecord(Record):
    repository: str
    commit: str
    dirty: bool
    """True when the spec or any tracked file had uncommitted changes."""


class Timings(Record):
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    load_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    """Evaluating the base (unless cached), while training, and the result."""


class Metrics(Record):
    steps: int = 0
    train_loss: float | None = None
    """Mean loss of the last logged steps."""
    first_loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    peak_memory_bytes: int | None = None
    """What the plan's memory estimate predicts, measured: the process's peak resident memory (CPU), or the
    GPU memory PyTorch reserved at its peak plus the CUDA context (CUDA)."""
    method: dict[str, float] = Field(default_factory=dict)
    """Method metrics of the last log line (DPO reward accuracy and margins, PPO scores...)."""


class ParameterChanges(Record):
    """Proof of what was trained: parameters compared bit for bit with the base, before and after."""

    changed: list[str]
    """Parameters whose values differ from the base model's."""
    planned_unchanged: list[str]
    """Planned as trained, yet identical to the base (no gradient reached them)."""
    unexpected: list[str]
    """Changed although the plan froze them: the run fails."""
    adapters_changed: int = 0
    """LoRA adapter tensors that moved away from their initial values."""


class Sample(Record):
    prompt: str
    before: str
    after: str | None = None


class RewardScores(Record):
    total: float
    """Mean over the prompts of the weighted sum of the checks' scores."""
    checks: dict[str, float]
    """Each declared check's mean score (a pass rate for the checks that score 1 or 0)."""


class RewardComparison(Record):
    """The declared checks of the method's reward on the eval prompts: the base model's greedy answers, then
    the trained model's (a reward model or function term is not part of it)."""

    prompts: int
    base: RewardScores
    trained: RewardScores | None = None


class Artifact(Record):
    path: str
    """Relative to the run directory."""
    sha256: str
    size: int


class WeightsOrigin(Record):
    """Where the base model's weights were really read from: a hub id may resolve to an offline GGUF copy,
    which is dequantised into runner's cache."""

    path: str
    """The file or folder read (for a hub model in the cache: its snapshot folder)."""
    format: Literal["safetensors", "bin", "gguf", "hub"]
    """hub: downloaded by transformers at load time."""
    sha256: str | None = None
    """Of the file, for a single-file (GGUF) model; a folder's files are listed in the plan's inputs."""
    quantization: str | None = None
    """A GGUF file's type (like MOSTLY_Q4_1) and its tensor types; the weights trained on are these,
    dequantised."""
    dequantized_to: str | None = None
    """The cached folder of the dequantised fp32 copy."""


class EvalScore(Record):
    base: float | None = None
    """The base model's score (None: not evaluated, e.g. `runner eval` of a model without --base)."""
    trained: float | None = None
    delta: float | None = None
    """trained - base."""


class EvalResult(Record):
    """One eval of the base and the result, side by side."""

    name: str
    kind: Literal["set", "task"]
    content_sha256: str = ""
    """The plan's hash of what is evaluated: an attempt that finds another one evaluates again."""
    rows: int
    """Rows (documents, for a task) evaluated."""
    scores: dict[str, EvalScore]
    """Per metric: the mean over the rows (an lm-eval metric as its results name it)."""
    base_rows: str | None = None
    """The base's per-row results, relative to the run directory (evals/NAME.base.jsonl)."""
    trained_rows: str | None = None
    base_cached: bool = False
    """The base's results were read from runner's cache (the same base and eval content before)."""
    seconds: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    """What a reader must know: rows whose regex match ran out of time, and the like."""


class GateOutcome(Record):
    condition: str
    passed: bool
    value: float | None = None
    """The result's score."""
    threshold: float | None = None
    """What it had to reach (with `base`, the base's score plus the offset)."""
    reason: str | None = None
    """Why it could not be decided (a missing score), when it could not."""


class BestModel(Record):
    """The model that scored best on evals.keep_best among the evaluations while training and at the end."""

    metric: str
    step: int
    value: float
    path: str
    """Relative to the run directory: best (a copy taken while training) or the final model's folder."""


class EvalsRecord(Record):
    results: list[EvalResult] = Field(default_factory=list)
    gates: list[GateOutcome] = Field(default_factory=list)
    passed: bool | None = None
    """Whether every gate passed; None without gates (or before the result is evaluated)."""
    best: BestModel | None = None


class Manifest(Record):
    manifest_version: Literal[1] = MANIFEST_VERSION
    run_id: str
    name: str
    method: str
    state: RunState
    error: RunError | None = None
    attempts: list[Attempt]
    spec_path: str
    spec_sha256: str
    plan_sha256: str
    """Hash of the plan (without its creation time): runs of the same plan resume each other."""
    plan: Plan
    data: list[DataRecord] = Field(default_factory=list)
    base_model: ModelIdentity
    weights: WeightsOrigin | None = None
    """Where the base model's weights came from on the machine that trained."""
    environment: Environment
    git: GitRecord | None = None
    timings: Timings
    metrics: Metrics = Field(default_factory=Metrics)
    parameters: ParameterChanges | None = None
    samples: list[Sample] = Field(default_factory=list)
    reward: RewardComparison | None = None
    """For a method with a declared reward and eval data: its checks, base model against trained model."""
    artifacts: list[Artifact] = Field(default_factory=list)
    evals: EvalsRecord | None = None
    """The spec's evals: base and result side by side, per-row files under evals/, and the gates."""
    trackers: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Where each experiment tracker of outputs.report_to got the metrics (TensorBoard log dir, MLflow
    tracking URI and run id, W&B run id); a resumed run continues there."""
    finished_at: str | None = None
    checkpoints_removed_bytes: int | None = None
    """The checkpoints deleted once the run succeeded (outputs.keep_checkpoints_after_success keeps them)."""
