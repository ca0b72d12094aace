"""Cold-process time of `runner validate` on one spec, beside `python -c "import torch"`.

    python bench/validate.py [--runs 15] [--spec specs/examples/chatty-sft.yaml] [--baseline REF]

All commands are measured in the same run, interleaved, so machine noise hits them alike.
With --baseline REF (a git ref of this repository), that version of runner (exported with git archive)
validates the same spec as well, and the ratio of the two medians is printed.
Bytecode caches are written and warmed first for both trees: with PYTHONDONTWRITEBYTECODE set (as in some
shells), every start would compile the modules that changed, and the figure would measure that.
Goal (issue 2): median at most 0.3 s, and at least 10 times faster than importing torch;
(issue 10): within 10% of the version before it. CPU time (user + system of each run) is printed beside the
wall time: on a shared machine the wall time also holds the waits for a core.

Measured here (issue 21, a 2-core machine shared by five engineers, load 1.5-6): validate's CPU time fell
by about a quarter against the version before (0.365 -> 0.259 s at best, 0.46 -> 0.39 s median; pydantic's
plugin loader no longer imported, the spec models built once when first used, argparse building only the
command run); the ratio to `import torch` was 6.6-8.2x depending on the load (issue 21 reported 7.7x
before). What remains is mostly fixed costs: importing pydantic and pydantic_core (~45% of validate),
PyYAML (~8%), and 73 dataclass definitions (~20%: Python 3.11 execs six generated methods for each frozen
one; 23 of them are runner's).
Later (issue 21 again, after the evals and declared rewards were added, idle machine): a spec is validated
by its own method's model (`runner.spec.models.spec_model`), so validate no longer imports the nine other
descriptors and the declared rewards, nor builds their validators: back to 0.994x of 7d71bf9 (from 1.13x).
validate 0.390 s, import torch 2.341 s (6.0x), the floor 0.191 s (12.3x).
On a faster machine (2026-12-04, idle, 9 runs): validate 0.163 s, import torch 1.118 s (6.8x), the floor
0.086 s (13.0x), 0.976x of 7d71bf9. One two-field pydantic model defined and validated on top of the floor,
with the plugin loader kept out as runner does, took 0.09 s (12x): 10x leaves runner ~28 ms over the floor,
and it uses ~76 ms (its ~35 modules' imports ~37 ms, with ~40 pydantic class definitions and two dozen
dataclasses; building the spec's validator 22 ms; the checks 3 ms). 10x needs a validate without pydantic on
its path: a second validator of every field beside the models plan and run use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.baseline import exported  # noqa: E402 (after the path)

FLOOR = "the floor"
"""Python starting and importing what validate cannot do without, PyYAML and pydantic's BaseModel, with no model
built: the bound on validate's time while the spec models are pydantic's."""
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def cold(command: list[str], tree: Path = REPO) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one cold run. The CPU time is what the command itself
    costs; on a shared machine the wall time also holds the waits for a core, which the median evens out."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree,
                   env={**ENV, "PYTHONPATH": str(tree)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - start, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spec", default="specs/examples/chatty-sft.yaml")
    parser.add_argument("--baseline", metavar="REF", help="also time this git ref's runner validate")
    args = parser.parse_args()
    validate = [sys.executable, "-m", "runner", "validate", args.spec]
    with exported(args.baseline) if args.baseline else contextlib.nullcontext() as baseline:
        commands = {"runner validate": (validate, REPO), "import torch": ([sys.executable, "-c", "import torch"], REPO),
                    FLOOR: ([sys.executable, "-c", "import yaml\nfrom pydantic import BaseModel"], REPO)}
        if baseline:
            commands[f"validate at {args.baseline}"] = (validate, baseline)
        for command, tree in commands.values():  # write the bytecode caches, warm the file cache
            cold(command, tree)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (command, tree) in commands.items():
                wall, used = cold(command, tree)
                times[name].append(wall)
                cpu[name].append(used)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    for name, median in medians.items():
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"{name:24} median {median:.3f} s  (range {spread} s, {args.runs} cold runs; CPU {cpu_medians[name]:.3f} s)")
    ratio = medians["import torch"] / medians["runner validate"]
    verdict = "meets" if medians["runner validate"] <= 0.3 and ratio >= 10 else "misses"
    print(f"import torch / runner validate = {ratio:.1f}x  -> {verdict} the goal (<= 0.3 s and >= 10x)")
    print(f"  in CPU time: {cpu_medians['import torch'] / cpu_medians['runner validate']:.1f}x")
    print(f"import torch / {FLOOR} = {medians['import torch'] / medians[FLOOR]:.1f}x  (what validate could reach with "
          f"no code of its own; runner's share: {medians['runner validate'] - medians[FLOOR]:.3f} s)")
    if baseline:
        change = medians["runner validate"] / medians[f"validate at {args.baseline}"]
        print(f"runner validate / validate at {args.baseline} = {change:.3f}  -> "
              f"{'within' if change <= 1.10 else 'beyond'} 10%  "
              f"(CPU time: {cpu_medians['runner validate'] / cpu_medians[f'validate at {args.baseline}']:.3f})")


if __name__ == "__main__":
    main()
