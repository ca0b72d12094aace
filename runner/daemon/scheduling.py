"""The queue: which planned jobs start now, and why each of the others waits.

Order: jobs resuming (recovering) first, then by priority (higher first), then by arrival (job id).
A job starts when its devices have room (runner.daemon.resources), a job slot is free
(`--max-jobs`), and no job ahead of it waits for the same kind of device: the order is strict, so a
small job never overtakes a large one that waits for room, and the large one is never starved. A job
that needs more than the box has fails at once rather than blocking everything behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.daemon.resources import Devices
from runner.daemon.states import State
from runner.daemon.store import Job


def queue_order(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda job: (job.state != State.RECOVERING, -job.priority, job.id))


@dataclass
class Decision:
    job: Job
    gpus: list[int] | None = None
    """Start it on these GPUs (empty: on the CPU); None when it waits."""
    waits: str = ""
    """Why it waits, in words."""
    never: str | None = None
    """Why it can never start on this box: it fails."""


def decide(ready: list[Job], devices: Devices, running: int, max_jobs: int | None) -> list[Decision]:
    """A decision for each planned job, in queue order; the devices of those that start are reserved."""
    decisions = []
    blocked: dict[str, Job] = {}
    """kind of device -> the first job that waits for it"""
    for job in queue_order(ready):
        kind, count, estimate = job.device_type or "cpu", job.devices or 1, job.estimate_bytes or 0
        pool = "gpu" if kind == "cuda" and devices.gpus else "cpu"
        never = devices.never_fits(kind, count, estimate)
        ahead = blocked.get(pool)
        if never:
            decisions.append(Decision(job, never=never))
        elif max_jobs is not None and running >= max_jobs:
            decisions.append(Decision(job, waits=f"waiting for a job slot: --max-jobs {max_jobs}, and {running} running"))
        elif ahead is not None:
            decisions.append(Decision(job, waits=f"waiting for its turn: #{ahead.id} {ahead.name} "
                                                  f"(priority {ahead.priority}) is ahead and waits for room"))
        else:
            fit = devices.fit(kind, count, estimate)
            if isinstance(fit, str):
                blocked[pool] = job
                decisions.append(Decision(job, waits=f"waiting for {fit}"))
            else:
                devices.reserve(job.id, fit, estimate)
                running += 1
                decisions.append(Decision(job, gpus=fit))
    return decisions
