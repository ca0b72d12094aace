"""How fast the watch daemon reacts, and what it costs when idle.

    python bench/daemon.py [--specs 5] [--idle 30] [--settle 0.5]

Starts `runner watch` on a temporary folder with a tiny model, drops specs one at a time,
and reads the daemon's own event log (daemon.jsonl) for when each spec was queued, when
its plan child finished, and when its run child started. Model load happens inside the
run child and is not part of these figures. Then it leaves the daemon idle and reads its
CPU time from /proc.
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=0.5)
    args = parser.parse_args()
    from tests.tiny import make_model

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder, state = root / "specs", root / "state"
        folder.mkdir()
        make_model(folder / "model")
        (folder / "data.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 8)
        daemon = subprocess.Popen([sys.executable, "-m", "runner", "watch", str(folder), "--state-dir", str(state),
                                   "--settle", str(args.settle)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd=REPO)
        time.sleep(3)
        landed: dict[str, float] = {}
        try:
            for index in range(args.specs):
                name = f"bench-{index}"
                text = (f"version: 1\nname: {name}\nmethod: sft\nbase_model: ./model\n"
                        f"data: {{train: data.jsonl}}\ntraining: {{max_steps: 1, batch_size: 4}}\n")
                landed[name] = time.time()
                (folder / f"{name}.yaml").write_text(text)
                deadline = time.time() + 180
                while not any(e.get("event") == "job_finished" and e.get("name") == name
                              for e in events(state / "daemon.jsonl")):
                    if time.time() > deadline:
                        raise SystemExit(f"{name} did not finish")
                    time.sleep(0.1)
            before, started = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.idle)
            idle_cpu = (cpu_seconds(daemon.pid) - before) / (time.monotonic() - started)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
        log = events(state / "daemon.jsonl")

    def at(kind: str, name: str) -> float:
        return next(stamp(e) for e in log if e.get("event") == kind and e.get("name") == name)

    queued = [at("job_queued", n) - t for n, t in landed.items()]
    planned = [at("job_planned", n) - at("job_queued", n) for n in landed]
    started = [at("job_started", n) - at("job_planned", n) for n in landed]
    total = [at("job_started", n) - t for n, t in landed.items()]
    print(f"{args.specs} specs dropped one at a time; settle {args.settle} s; medians (min-max):")
    for label, values in (("landing -> queued (settle + validate)", queued),
                          ("queued -> planned (runner plan child)", planned),
                          ("planned -> run child started", started),
                          ("landing -> run child started", total)):
        print(f"  {label:<40} {statistics.median(values):.3f} s  ({min(values):.3f}-{max(values):.3f})")
    print(f"  idle daemon CPU over {args.idle:.0f} s: {100 * idle_cpu:.2f}% of one core")


if __name__ == "__main__":
    main()
