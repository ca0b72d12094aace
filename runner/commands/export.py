"""`runner export RUN`: a LoRA run's adapter merged into its base, as a plain transformers folder.

RUN is a run folder, or a spec file, spec name or folder of runs, whose latest succeeded run is exported.
"""

from __future__ import annotations

from pathlib import Path

from runner.commands.plan import run_root
from runner.errors import ExitCode, RunnerError, UsageError


def export(target: str, out: str | None, runs_dir: str | None = None) -> int:
    from runner.rundir import RunDirectory
    from runner.runs import find_run

    run = RunDirectory(find_run(target, run_root(runs_dir), succeeded=True).path)
    manifest = run.read_manifest()
    if manifest is None:
        raise RunnerError(f"{run.path}: the run's manifest.json cannot be read")
    if manifest.state != "succeeded":
        raise RunnerError(f"run {run.run_id} is {manifest.state}, not succeeded", "export a finished run")
    folder = Path(out).resolve() if out else run.path / "merged"
    if folder.exists():
        raise UsageError(f"{folder} already exists", "choose another folder with --out, or delete it")
    if not folder.parent.is_dir():
        raise UsageError(f"{folder.parent} is not a folder", "create it first, or choose another --out")

    from runner.execute.export import export as write_merged, merge_note
    from runner.execute.library_output import quiet_libraries

    quiet_libraries()
    written = write_merged(run, manifest, folder)
    print(f"{written}: {merge_note(manifest.plan)}\n"
          f"  it loads with transformers alone: from_pretrained({str(written)!r})")
    return ExitCode.OK
