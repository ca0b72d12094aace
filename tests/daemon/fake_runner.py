"""Stands in for `python -m runner` in daemon tests: plans from a template, "runs" by sleeping.

It honours what the daemon relies on: `worker` is the real planning worker (runner.daemon.worker:
the real protocol, limits and checks) with a planner that copies a template plan; `run --plan`
writes a manifest in a run directory keyed by the plan hash (resuming an unfinished one) and
metrics.jsonl, SIGTERM ends it as interrupted, and a line per start goes to $FAKE_LEDGER for
exactly-once checks. Comments in the spec steer it:

    # fake-seconds: N          how long the run takes (0.2)
    # fake-metrics: N          metrics lines it writes over that time (one per 0.1 s by default)
    # fake-hold: N             seconds it goes on running after writing all its metrics (0)
    # fake-log: TEXT           a line it prints to its log
    # fake-run: crash|oom|print-last   print-last: a plain print after the run, before its end is recorded
    # fake-run: failed-KIND    the run fails with this failure kind (runner.failures) in its manifest
    # fake-plan-seconds: N     how long planning takes
    # fake-plan: fail|garbage|crash|hog
    # fake-device: cuda, # fake-gpus: N, # fake-estimate-gib: X    what the plan asks for
"""

import hashlib
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

from runner.daemon.worker import PlanRequest, serve
from runner.errors import RunnerError
from runner.manifest import Attempt, Environment, Manifest, RunError, Timings
from runner.plan.models import MemoryItem, Plan
from runner.rundir import new_run, now, plan_sha256, resumable_run, runs_folder
from runner.spec.jobs import spec_name


def directive(text: str, key: str, default: str = "") -> str:
    match = re.search(rf"^# fake-{key}: (\S+)", text, re.MULTILINE)
    return match.group(1) if match else default


def fake_plan(request: PlanRequest):
    spec = request.snapshot.resolve()
    text = spec.read_text()
    if directive(text, "plan") == "fail":
        raise RunnerError("the estimate (99.0 GiB per device) does not fit", "give the job more GPUs")
    time.sleep(float(directive(text, "plan-seconds", "0")))
    if directive(text, "plan") == "garbage":  # a plan file the daemon cannot read
        request.out.write_text("[" * 100_000)
        return None
    if directive(text, "plan") == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if directive(text, "plan") == "hog":  # past the worker's memory limit
        return bytearray(64 * 2**30)
    template = Plan.model_validate_json(Path(os.environ["FAKE_PLAN_TEMPLATE"]).read_text())
    update = {"name": spec_name(spec), "spec": {**template.spec, "description": text},
              "inputs": template.inputs.model_copy(update={
                  "spec_path": str(spec), "spec_source": str(request.source),
                  "spec_sha256": hashlib.sha256(spec.read_bytes()).hexdigest()})}
    if directive(text, "device") == "cuda":
        update["device"] = template.device.model_copy(update={"type": "cuda",
                                                              "count": int(directive(text, "gpus", "1"))})
        update["memory"] = template.memory.model_copy(update={"items": [MemoryItem(
            name="everything", bytes=int(float(directive(text, "estimate-gib", "1")) * 2**30))]})
    return template.model_copy(update=update)


def run(arguments: list[str]) -> int:
    made = Plan.model_validate_json(Path(arguments[arguments.index("--plan") + 1]).read_text())
    root = Path(arguments[arguments.index("--runs-dir") + 1])
    text = made.spec["description"]
    folder, digest = runs_folder(root, made), plan_sha256(made)
    run_dir = resumable_run(folder, digest) or new_run(folder, digest)
    manifest = run_dir.read_manifest() or Manifest(
        run_id=run_dir.run_id, name=made.name, method=made.method, state="running", attempts=[],
        spec_path=made.inputs.spec_path, spec_sha256=made.inputs.spec_sha256, plan_sha256=digest, plan=made,
        base_model=made.inputs.base_model, timings=Timings(started_at=now()),
        environment=Environment(python="3", platform="test", host=socket.gethostname(), versions={}))
    if manifest.attempts and manifest.attempts[-1].state == "running":
        manifest.attempts[-1].state = "killed"
    manifest.attempts.append(Attempt(number=len(manifest.attempts) + 1, started_at=now(), pid=os.getpid(),
                                     host=socket.gethostname()))
    manifest.state = "running"
    run_dir.write_manifest(manifest)
    with open(os.environ["FAKE_LEDGER"], "a") as ledger:
        ledger.write(json.dumps({"spec": made.inputs.spec_source, "attempt": len(manifest.attempts),
                                 "content": made.inputs.spec_sha256}) + "\n")

    def finish(state: str, code: int, error: RunError | None = None):
        manifest.state, manifest.error, manifest.attempts[-1].state = state, error, state
        manifest.finished_at = manifest.attempts[-1].finished_at = now()
        run_dir.write_manifest(manifest)
        return code

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    said = re.search(r"^# fake-log: (.*)$", text, re.MULTILINE)
    print(f"fake run of {made.name}" + (f"\n{said.group(1)}" if said else ""), flush=True)
    seconds = float(directive(text, "seconds", "0.2"))
    lines = int(directive(text, "metrics", "0"))
    started = time.monotonic()
    deadline = started + seconds
    written = 0
    while time.monotonic() < deadline and not stop:
        due = lines if seconds <= 0 else min(lines, int(lines * (time.monotonic() - started) / seconds) + 1)
        written = _metrics(run_dir, written, due, started, lines)
        time.sleep(0.05)
    if not stop:
        _metrics(run_dir, written, lines, started, lines)
    held = time.monotonic() + float(directive(text, "hold", "0"))
    while time.monotonic() < held and not stop:
        time.sleep(0.05)
    if stop:
        return finish("interrupted", 130, RunError(kind="interrupted", message="stopped by a signal"))
    if directive(text, "run") == "print-last":  # as runner printed before issue 20: a full disk's ENOSPC ends it
        print(f"fake run of {made.name} ends", flush=True)
    if directive(text, "run") == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if directive(text, "run") == "oom":
        return finish("failed", 1, RunError(kind="oom", message="out of memory: CUDA out of memory"))
    if directive(text, "run").startswith("failed-"):
        kind = directive(text, "run").removeprefix("failed-")
        return finish("failed", 1, RunError(kind=kind, message=f"the run failed ({kind})"))
    return finish("succeeded", 0)


def _metrics(run_dir, written: int, due: int, started: float, total: int) -> int:
    """Append metrics lines up to `due`: a falling loss, tokens per second and the elapsed time; and print
    a progress line for each, as the real runner does when its stdout is not a terminal."""
    with open(run_dir.metrics, "a") as handle:
        for step in range(written + 1, due + 1):
            record = {"step": step, "loss": 3.0 / (1 + 0.3 * step), "tokens_per_second": 1234.5,
                      "elapsed_s": round(time.monotonic() - started, 3),
                      "learning_rate": 1e-4 * (1 - step / (total + 1)), "grad_norm": 1.5 + 1 / step}
            if step % 4 == 0:
                record["eval_loss"] = record["loss"] * 1.1
            handle.write(json.dumps(record) + "\n")
            print(json.dumps({"event": "progress", "step": step, "total_steps": total, "loss": record["loss"],
                              "tokens_per_second": 1234.5, "eta_s": 1.0}), flush=True)
    return max(written, due)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    sys.exit(serve(fake_plan) if command == "worker" else run(rest))
