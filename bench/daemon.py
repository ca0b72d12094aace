"""How fast the watch daemon reacts, and what it costs when idle.

    python bench/daemon.py [--specs 5] [--idle 30] [--settle 0.5] [--baseline REF]

Starts `runner watch` on a temporary folder with a tiny model, drops specs one at a time,
and reads the daemon's own event log (daemon.jsonl) for when each spec was queued (checked),
planned, and its run child started. Model load happens inside the run child and is not part of
these figures. Then it leaves the daemon idle and reads the CPU time of the daemon and its
children (the planning worker) from /proc, and their memory.

With --baseline REF (a git ref of this repository, e.g. main), the same measurement runs first on
that version of runner (exported with git archive), so the two are compared side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.baseline import exported  # noqa: E402 (after the path)


def family(pid: int) -> list[int]:
    """The process and its children (the planning worker; runs have ended when this is read)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def measure(code: Path, specs: int, idle: float, settle: float) -> dict:
    """Figures of the runner in `code` (a source tree)."""
    from tests.tiny import make_model

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder, state = root / "specs", root / "state"
        folder.mkdir()
        make_model(folder / "model")
        (folder / "data.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
        daemon = subprocess.Popen([sys.executable, "-m", "runner", "watch", str(folder), "--state-dir", str(state),
                                   "--settle", str(settle)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
        time.sleep(8)  # started, and its worker (if it has one) warm
        landed: dict[str, float] = {}
        try:
            for index in range(specs):
                name = f"bench-{index}"
                text = (f"version: 1\nname: {name}\nmethod: sft\nbase_model: ./model\n"
                        f"data: {{train: data.jsonl}}\ntraining: {{max_steps: 1, batch_size: 4}}\n")
                landed[name] = time.time()
                (folder / f"{name}.yaml").write_text(text)
                deadline = time.time() + 180
                while not any(e.get("event") == "job_finished" and e.get("name") == name
                              for e in events(state / "daemon.jsonl")):
                    if time.time() > deadline:
                        raise SystemExit(f"{name} did not finish ({code})")
                    time.sleep(0.1)
            time.sleep(2)
            processes = family(daemon.pid)
            before, started = cpu_seconds(processes), time.monotonic()
            time.sleep(idle)
            idle_cpu = (cpu_seconds(processes) - before) / (time.monotonic() - started)
            memory = [rss_mib(pid) for pid in processes]
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
        log = events(state / "daemon.jsonl")

    def at(kind: str, name: str) -> float:
        return next(stamp(e) for e in log if e.get("event") == kind and e.get("name") == name)

    return {
        "landing -> queued (settle + check)": [at("job_queued", n) - t for n, t in landed.items()],
        "queued -> planned": [at("job_planned", n) - at("job_queued", n) for n in landed],
        "planned -> run child started": [at("job_started", n) - at("job_planned", n) for n in landed],
        "landing -> run child started": [at("job_started", n) - t for n, t in landed.items()],
        "idle CPU, % of one core": [100 * idle_cpu],
        "resident memory, MiB (daemon, children)": memory,
    }


def show(label: str, figures: dict) -> None:
    print(label)
    for name, values in figures.items():
        if name.startswith("resident"):
            print(f"  {name:<42} " + ", ".join(f"{value:.0f}" for value in values))
        elif name.startswith("idle"):
            print(f"  {name:<42} {values[0]:.2f}")
        else:
            print(f"  {name:<42} {statistics.median(values):.3f} s  ({min(values):.3f}-{max(values):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--baseline", metavar="REF", help="also measure this git ref of runner, first")
    args = parser.parse_args()
    print(f"{args.specs} specs dropped one at a time; settle {args.settle} s; medians (min-max):")
    baseline = None
    if args.baseline:
        with exported(args.baseline) as code:
            baseline = measure(code, args.specs, args.idle, args.settle)
        show(f"{args.baseline}:", baseline)
    current = measure(REPO, args.specs, args.idle, args.settle)
    show("this tree:", current)
    if baseline:
        key = "landing -> run child started"
        print(f"  {key}: {statistics.median(baseline[key]) / statistics.median(current[key]):.1f}x faster")


if __name__ == "__main__":
    main()
