"""The result manifest: what was trained, on what, with which code, and what came out.

Written atomically at every state change of a run (so a crash leaves the last true
state), read by `runner status`, the daemon and `{job: NAME}` references. No torch here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.plan.models import ModelIdentity, Plan

MANIFEST_VERSION = 1
RunState = Literal["running", "succeeded", "failed", "interrupted"]
FailureKind = Literal["plan", "stale", "data", "oom", "runtime", "diverged", "interrupted", "integrity", "killed"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunError(Record):
    kind: FailureKind
    """plan / stale: refused before training; data: too many unusable rows; oom: out of memory;
    runtime: an exception; diverged: a loss became infinite or NaN; interrupted: SIGINT/SIGTERM;
    integrity: parameters outside the plan changed; killed: worker processes ended without recording why
    (killed, out of memory, a lost node)."""
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


class Metrics(Record):
    steps: int = 0
    train_loss: float | None = None
    """Mean loss of the last logged steps."""
    first_loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    peak_memory_bytes: int | None = None
    """Peak GPU memory allocated (CUDA) or peak RSS of the process (CPU)."""
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
    trackers: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Where each experiment tracker of outputs.report_to got the metrics (TensorBoard log dir, MLflow
    tracking URI and run id, W&B run id); a resumed run continues there."""
    finished_at: str | None = None
