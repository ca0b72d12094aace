"""What a plan was made from (spec, data, model, versions), and the check that it still is.

Like Terraform's "Saved plan is stale": a plan applies only to the inputs it was made
from; `runner run --plan` calls `check_fresh` and refuses otherwise.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from runner import __version__
from runner.errors import RunnerError
from runner.fsutil import file_sha256
from runner.data import sources
from runner.data.files import DataFileError
from runner.model import source
from runner.plan.models import DataIdentity, FileIdentity, Inputs, Plan
from runner.spec.check import SpecResult, check_spec
from runner.spec.datacheck import SourceReport
from runner.spec.models import DataSource

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pydantic")


class StalePlanError(RunnerError):
    """A saved plan whose spec, data or model changed since it was made."""


def versions() -> dict[str, str]:
    found = {"runner": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def inputs(spec_path: Path, checked: SpecResult, location: source.ModelLocation,
           reward_location: source.ModelLocation | None = None, epoch_rows: list[int] | None = None,
           teacher_location: source.ModelLocation | None = None) -> Inputs:
    """`epoch_rows`: the rows one epoch takes from each training source (the planner's count)."""
    data = []
    for role, report in checked.data.items():
        for position, (written, read) in enumerate(zip(checked.spec.data.sources(role), report.sources)):
            epoch = epoch_rows[position] if role == "train" and epoch_rows is not None else None
            data.append(data_identity(role, written, read, epoch))
    return Inputs(spec_path=str(spec_path.resolve()), spec_sha256=file_sha256(spec_path), data=data,
                  spec_source=str(checked.source.resolve()) if checked.source else None,
                  base_model=source.identity(location),
                  reward_model=source.identity(reward_location) if reward_location else None,
                  teacher_model=source.identity(teacher_location) if teacher_location else None, versions=versions())


def data_identity(role: str, written, report: SourceReport, epoch_rows: int | None = None) -> DataIdentity:
    """A source as read (`written`: its spec entry, a DataSource or a test set's EvalSource)."""
    rows = report.source
    sha256, files = rows.fingerprint()
    return DataIdentity(
        role=role, source=rows.label, spec=written.model_dump(mode="json", exclude_defaults=True), kind=rows.kind,
        path=str(rows.root.resolve()), sha256=sha256,
        # absolute, links kept: a hub snapshot's files are links to blobs named by hash, without their suffix
        files=[FileIdentity(path=os.path.abspath(path), sha256=sha, size=size) for path, sha, size in files],
        split=rows.split, config=rows.config, revision=rows.revision, columns=dict(rows.columns), weight=rows.weight,
        rows=report.rows, usable_rows=report.usable, epoch_rows=epoch_rows, format=report.format,
        variant=report.variant or "standard")


def data_change(data: DataIdentity, spec_folder: Path) -> str | None:
    """What changed in a source since it was planned (its files, or what its spec entry resolves to), or None."""
    written = DataSource.model_validate(data.spec or data.path)
    try:
        sha256, _ = sources.resolve(written, spec_folder, data.role).fingerprint()
    except (DataFileError, OSError) as error:
        return f"{data.role} data {data.source or data.path} cannot be read: {getattr(error, 'message', error)}"
    return None if sha256 == data.sha256 else f"{data.role} data {data.source or Path(data.path).name} changed"


def check_fresh(plan: Plan, run_root: Path) -> None:
    """Raise StalePlanError naming what changed since the plan was made."""
    recorded = plan.inputs
    spec_path = Path(recorded.spec_path)
    changes = []
    if not spec_path.is_file():
        changes.append(f"the spec {spec_path} is gone")
    elif file_sha256(spec_path) != recorded.spec_sha256:
        changes.append(f"the spec {spec_path.name} changed")
    changes += [change for data in recorded.data if (change := data_change(data, recorded.spec_folder))]
    if not changes:
        checked = check_spec(spec_path, check_inputs=False,
                             source=Path(recorded.spec_source) if recorded.spec_source else None)
        if checked.spec is not None:
            models = [(checked.spec.base_model, recorded.base_model, "base model")]
            if recorded.reward_model is not None:
                models.append((checked.spec.reward_source().model, recorded.reward_model, "reward model"))
            if recorded.teacher_model is not None:
                models.append((checked.spec.teacher_source(), recorded.teacher_model, "teacher model"))
            for spec_source, before, role in models:
                current = source.identity(source.locate(spec_source, recorded.spec_folder, run_root))
                if current != before:
                    changes.append(f"the {role} {before.reference} changed ({_model_difference(before, current)})")
    if changes:
        raise StalePlanError("saved plan is stale: " + "; ".join(changes),
                             f"make a new plan: runner plan {spec_path}")


def _model_difference(old, new) -> str:
    if old.kind != new.kind or old.location != new.location:
        return f"now {new.kind} {new.location}, was {old.kind} {old.location}"
    old_files = {f.path: f.sha256 for f in old.files}
    new_files = {f.path: f.sha256 for f in new.files}
    changed = sorted(p for p in old_files.keys() | new_files.keys() if old_files.get(p) != new_files.get(p))
    if changed:
        return "files: " + ", ".join(changed[:5])
    return f"revision {old.revision} -> {new.revision}" if old.revision != new.revision else "its run changed"
