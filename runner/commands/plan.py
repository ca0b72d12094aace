"""`runner plan SPEC`: show exactly what will be trained, before anything runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.box import run_root
from runner.errors import ExitCode, UsageError
from runner.fsutil import write_atomically


def plan(spec: str, out: str | None, output_format: str, runs_dir: str | None, source: str | None = None,
         machine: str | None = None) -> int:
    """`source`: the spec file that `spec` is a copy of (the daemon plans its snapshots); data, reward
    modules and {job:} references resolve beside the source. `machine`: a described machine to plan
    for instead of this one (what-if)."""
    from runner.execute.library_output import quiet_libraries
    from runner.plan.machine import what_if
    from runner.plan.render import render

    quiet_libraries()
    try:
        described = what_if(machine) if machine else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    made = plan_spec(spec, run_root(runs_dir), described, spec_source=Path(source) if source else None)
    if made is None:
        return ExitCode.INVALID
    if out:
        write_atomically(Path(out), made.model_dump_json(indent=2) + "\n")
    if output_format == "json":
        print(made.model_dump_json(indent=2))
    else:
        print(render(made, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ), end="")
        if out:
            print(f"Saved to {out}; run exactly this plan with: runner run --plan {out}")
    return ExitCode.OK


def plan_spec(spec: str | None, root: Path, machine=None, spec_source: Path | None = None):
    """The plan of a spec file; None after printing the diagnostics of an invalid spec."""
    from runner.commands.validate import text_report
    from runner.plan.planner import PlanError, make_plan

    if not spec or not Path(spec).is_file():
        raise UsageError(f"{spec}: no such spec file")
    try:
        return make_plan(Path(spec), run_root=root, machine=machine, spec_source=spec_source)
    except PlanError as error:
        if error.result is not None:
            print(text_report([error.result]))
            return None
        raise
