"""What the README's test command must leave as it found it: the system packages, the processes (services
and anything else a test started), and the Slurm queue.

    python3 .ci/machine-state.py save FILE       before the tests
    python3 .ci/machine-state.py compare FILE    after them: exit 1, naming each, when something is new

A process that is still ending gets 30 s. Standard library only: it runs with the system python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 30


def packages() -> list[str]:
    if shutil.which("dpkg-query") is None:
        return []
    listed = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n"], capture_output=True, text=True)
    return sorted(line.split()[0] for line in listed.stdout.splitlines() if line.endswith(" installed"))


def processes() -> dict[str, str]:
    """'pid start-time' -> command line, of every process but kernel threads and this one's own family."""
    own = {os.getpid(), os.getppid()}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if stat[0] in ("Z", "X") or stat[1] == "2" or not command:  # ended, or a kernel thread
            continue
        if int(stat[1]) in own:  # a child of this check (none) or of the shell that runs it
            continue
        found[f"{entry.name} {stat[19]}"] = command
    return found


def slurm_jobs() -> list[str]:
    if shutil.which("squeue") is None:
        return []
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True)
    return sorted(listed.stdout.splitlines()) if listed.returncode == 0 else []


def state() -> dict:
    return {"packages": packages(), "processes": processes(), "slurm_jobs": slurm_jobs()}


def new_things(before: dict) -> list[str]:
    now = state()
    found = [f"package installed: {name}" for name in sorted(set(now["packages"]) - set(before["packages"]))]
    found += [f"package removed: {name}" for name in sorted(set(before["packages"]) - set(now["packages"]))]
    found += [f"process left running: pid {key.split()[0]}: {command[:200]}"
              for key, command in sorted(now["processes"].items()) if key not in before["processes"]]
    found += [f"Slurm job left in the queue: {job}" for job in now["slurm_jobs"] if job not in before["slurm_jobs"]]
    return found


def main() -> int:
    action, path = sys.argv[1], Path(sys.argv[2])
    if action == "save":
        path.write_text(json.dumps(state()))
        return 0
    before = json.loads(path.read_text())
    deadline = time.monotonic() + GRACE_S
    while True:
        found = new_things(before)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(1)
    for line in found:
        print(f"machine-state: {line}", file=sys.stderr)
    if found:
        print("machine-state: the tests must leave the machine as they found it", file=sys.stderr)
        return 1
    print("machine-state: no new package, process or Slurm job", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
