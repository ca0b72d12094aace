"""Run directories: `<run root>/<outputs.dir>/<name>/<run-id>/`, their layout, and their manifests.

Torch-free: the CLI, the daemon and `{job: NAME}` references read runs through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from runner.errors import RunnerError
from runner.fsutil import write_atomically
from runner.manifest import Manifest
from runner.methods import registry
from runner.plan.models import Plan
from runner.readers import read_regular


MAX_PLAN_BYTES = 64 * 1024 * 1024
"""A plan or a manifest is kilobytes to a few megabytes (the trainable table of a large model)."""


def read_plan(path: Path) -> Plan:
    """A saved plan, or a RunnerError that says why the file is not one."""
    from pydantic import ValidationError

    try:
        return Plan.model_validate_json(read_regular(path, MAX_PLAN_BYTES))
    except OSError as error:
        raise RunnerError(f"cannot read the plan {path}: {error.strerror or error}") from None
    except ValidationError as error:
        raise RunnerError(f"{path} is not a runner plan ({error.error_count()} problems)",
                          "make one with: runner plan SPEC --out plan.json") from None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


IDENTITY_HARDWARE = ("device", "precision")
"""The hardware settings that change what a step computes; the others (processes, strategy, offload,
checkpointing, memory budget), the micro-batching and packing only change how it is computed."""


def plan_sha256(plan: Plan) -> str:
    """What makes two plans the same run: the spec, every resolved setting, the trainable set, the
    steps and the inputs. Not when it was made, nor the memory free at that moment, nor library
    versions, nor how the steps are spread over devices, nor the spec's queue priority, so that
    running the same spec again after an interruption resumes it, on as many devices as there are now.
    Nor the evals measured after training and the gates on them: a run that missed a gate, run again
    with a changed gate or eval, resumes at its eval stage instead of training again.
    The spec file is part of the inputs (its path): the watch daemon plans a snapshot named by the
    spec's content, so two daemon jobs never share a plan hash, even when they differ only in layout."""
    record = plan.model_dump(mode="json", include={"name", "method", "spec", "trainable", "steps", "inputs"})
    for key in ("versions", "spec_sha256"):  # the spec's content is in `spec`
        record["inputs"].pop(key)
    for name in registry.names():  # the spec as plans made before each method had its own spec model hold it:
        record["spec"].setdefault(name, None)  # every method's section, null but its own (those runs resume)
    record["spec"].pop("hardware")  # what it resolves to is in the settings
    record["spec"].pop("priority", None)  # when it runs, not what it trains
    evals = record["spec"].pop("evals", None)  # what is measured after training, and the gates on it, ...
    if evals and (evals.get("every") or evals.get("keep_best")):  # ... but not what happens while training
        record["spec"]["evals"] = {key: evals.get(key) for key in ("every", "keep_best")} | {
            "during": [item["name"] for item in evals.get("sets") or [] if item.get("during", True)]}
    record["spec"]["training"].pop("micro_batch_size")
    if isinstance(record["spec"].get(plan.method), dict):  # packing is how rows fill a pass, not which rows
        record["spec"][plan.method].pop("packing", None)
        record["spec"][plan.method] = record["spec"][plan.method] or None  # a section that only set packing
    # keyed by field path, as version-1 plans held them: a run planned then still resumes
    record["resolved"] = {key: entry.model_dump(mode="json")["value"] for key, entry in plan.settings_by_key().items()
                          if not _is_layout(key)}
    for key in ("devices", "micro_batch_size", "gradient_accumulation"):
        record["steps"].pop(key)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _is_layout(key: str) -> bool:
    section, _, name = key.partition(".")
    return (section == "hardware" and name not in IDENTITY_HARDWARE) or key in (
        "training.micro_batch_size", "training.gradient_accumulation") or name == "packing"


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    spec = property(lambda self: self.path / "spec.yaml")
    plan = property(lambda self: self.path / "plan.json")
    events = property(lambda self: self.path / "events.jsonl")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    rejected = property(lambda self: self.path / "rejected.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model = property(lambda self: self.path / "model")
    adapter = property(lambda self: self.path / "adapter")
    loss_plot = property(lambda self: self.path / "loss.png")
    manifest_file = property(lambda self: self.path / "manifest.json")

    @property
    def run_id(self) -> str:
        return self.path.name

    def read_manifest(self) -> Manifest | None:
        try:
            return Manifest.model_validate_json(read_regular(self.manifest_file, MAX_PLAN_BYTES))
        except (OSError, ValueError):
            return None

    def write_manifest(self, manifest: Manifest) -> None:
        write_atomically(self.manifest_file, manifest.model_dump_json(indent=2) + "\n")

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (trainer state written last, so its presence means complete)."""
        done = [p for p in self.checkpoints.glob("checkpoint-*")
                if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]  # not a .partial
        return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def runs_folder(run_root: Path, plan: Plan) -> Path:
    """Where runs of this plan's spec go; refuses anything that would leave the run root."""
    root = run_root.resolve()
    folder = (root / plan.settings.outputs.dir.value / plan.name).resolve()
    if root != folder and root not in folder.parents:
        raise RunnerError(f"outputs.dir {plan.settings.outputs.dir.value!r} resolves to {folder}, outside the run root "
                          f"{root}", "use a relative folder without symbolic links that leave the run root")
    return folder


def runs_of(folder: Path, plan_hash: str) -> list[tuple[RunDirectory, Manifest]]:
    """The runs of exactly this plan, oldest first (run ids start with their start time)."""
    found = []
    for manifest_file in sorted(folder.glob("*/manifest.json")):
        run = RunDirectory(manifest_file.parent)
        manifest = run.read_manifest()
        if manifest is not None and manifest.plan_sha256 == plan_hash:
            found.append((run, manifest))
    return found


def resumable_run(folder: Path, plan_hash: str) -> RunDirectory | None:
    """The newest unfinished run of exactly this plan: running it again resumes it."""
    unfinished = [run for run, manifest in runs_of(folder, plan_hash) if manifest.state != "succeeded"]
    return unfinished[-1] if unfinished else None


def process_alive(pid: int, host: str) -> bool:
    """Whether the process that wrote an attempt still runs (only knowable on the same host)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run(folder: Path, plan_hash: str) -> RunDirectory:
    return RunDirectory(new_folder(folder, plan_hash))


def new_folder(parent: Path, plan_hash: str) -> Path:
    """A new folder named by the time and the plan, so that names sort oldest first."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = parent / f"{stamp}-{plan_hash[:8]}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = parent / f"{stamp}-{plan_hash[:8]}-{suffix}"
    path.mkdir(parents=True)
    return path
