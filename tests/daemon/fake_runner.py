"""Stands in for `python -m runner` in daemon tests: plans from a template, "runs" by sleeping.

It honours what the daemon relies on: `plan --out` writes a Plan, `run --plan` writes a
manifest in a run directory keyed by the plan hash (resuming an unfinished one), SIGTERM
ends it as interrupted, and a line per start goes to $FAKE_LEDGER for exactly-once checks.
Comments in the spec steer it: `# fake-seconds: N`, `# fake-plan-seconds: N`, `# fake-plan: fail|garbage`,
`# fake-run: crash`.
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

from runner.manifest import Attempt, Environment, Manifest, RunError, Timings
from runner.plan.models import Plan
from runner.rundir import new_run, now, plan_sha256, resumable_run, runs_folder
from runner.spec.jobs import spec_name


def directive(text: str, key: str, default: str = "") -> str:
    match = re.search(rf"^# fake-{key}: (\S+)", text, re.MULTILINE)
    return match.group(1) if match else default


def plan(arguments: list[str]) -> int:
    spec = Path(arguments[0]).resolve()
    source = Path(arguments[arguments.index("--source") + 1]) if "--source" in arguments else spec
    text = spec.read_text()
    if directive(text, "plan") == "fail":
        print("runner plan: error: the estimate (99.0 GiB per device) does not fit", file=sys.stderr)
        return 1
    time.sleep(float(directive(text, "plan-seconds", "0")))
    if directive(text, "plan") == "garbage":  # a plan file the daemon cannot read
        Path(arguments[arguments.index("--out") + 1]).write_text("[" * 100_000)
        return 0
    template = Plan.model_validate_json(Path(os.environ["FAKE_PLAN_TEMPLATE"]).read_text())
    made = template.model_copy(update={
        "name": spec_name(spec), "spec": {**template.spec, "description": text},
        "inputs": template.inputs.model_copy(update={"spec_path": str(spec), "spec_source": str(source),
                                                     "spec_sha256": hashlib.sha256(spec.read_bytes()).hexdigest()})})
    Path(arguments[arguments.index("--out") + 1]).write_text(made.model_dump_json())
    return 0


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
    deadline = time.monotonic() + float(directive(text, "seconds", "0.2"))
    while time.monotonic() < deadline and not stop:
        time.sleep(0.05)
    if stop:
        return finish("interrupted", 130, RunError(kind="interrupted", message="stopped by a signal"))
    if directive(text, "run") == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if directive(text, "run") == "oom":
        return finish("failed", 1, RunError(kind="oom", message="out of memory: CUDA out of memory"))
    return finish("succeeded", 0)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    sys.exit(plan(rest) if command == "plan" else run(rest))
