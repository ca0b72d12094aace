"""What the nodes of one launch tell each other, through the run root that every node sees.

    <runs folder>/launches/<launch id>.json        node 0: the run directory and attempt this launch trains
    <run dir>/launch/attempt-<n>/rank-<r>.json     a worker that failed: its error
    <run dir>/launch/attempt-<n>/node-<k>.json     a node whose workers ended: how

Node 0 chooses the run directory (a new one, or the unfinished run of the same plan to resume) and records
it under the launch id before it starts its workers; the other nodes wait for that record and join the
same run. After its workers end, node 0 waits for every node's end record and writes the outcome into the
manifest: the first failure of the launch, whichever rank and node it happened on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runner.errors import RunnerError
from runner.fsutil import write_atomically


@dataclass(frozen=True)
class LaunchRecord:
    run_dir: str
    attempt: int
    nodes: int


@dataclass(frozen=True)
class Failure:
    node: int
    host: str
    kind: str
    message: str
    at: float
    """Wall-clock time (seconds since the epoch) when it was recorded."""
    rank: int | None = None
    """The worker's global rank; None when a node's workers ended without any of them recording why."""
    hint: str | None = None
    traceback: str | None = None
    secondary: bool = False
    """Raised because another process of the launch went away: a consequence, not the cause."""

    @property
    def summary(self) -> str:
        return f"rank {self.rank} on {self.host}: {self.message}" if self.rank is not None else self.message


@dataclass(frozen=True)
class NodeEnd:
    node: int
    host: str
    exit_code: int
    stopped_by: Literal["failure", "signal"] | None
    """Why the workers were stopped: a failure elsewhere in the launch, or a stop signal (both end torchrun
    with a non-zero code that is not a failure of this node)."""
    at: float


def launch_file(runs_folder: Path, launch_id: str) -> Path:
    return runs_folder / "launches" / f"{launch_id}.json"


def ensure_unused(runs_folder: Path, launch_id: str) -> None:
    """A reused id would let the other nodes join that earlier launch's run instead of this one."""
    path = launch_file(runs_folder, launch_id)
    if path.exists():
        raise RunnerError(f"launch id {launch_id!r} was used before ({path})",
                          "give every launch a new id, the same on all its nodes")


def record_launch(runs_folder: Path, launch_id: str, record: LaunchRecord) -> None:
    write_atomically(launch_file(runs_folder, launch_id), json.dumps(dataclasses.asdict(record)) + "\n")


def read_launch(runs_folder: Path, launch_id: str) -> LaunchRecord | None:
    try:
        return LaunchRecord(**json.loads(launch_file(runs_folder, launch_id).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def wait_for_launch(runs_folder: Path, launch_id: str, timeout_s: float) -> LaunchRecord:
    """Node 0's record of this launch; the other nodes wait for it (shared filesystems can take seconds to
    show a new file on another machine)."""
    deadline = time.monotonic() + timeout_s
    while (record := read_launch(runs_folder, launch_id)) is None:
        if time.monotonic() > deadline:
            raise RunnerError(
                f"node 0 did not start launch {launch_id!r} within {timeout_s:.0f} s (no "
                f"{launch_file(runs_folder, launch_id)})",
                "start node 0 with the same plan, launch id and run root; the run root must be on storage that "
                "every node sees")
        time.sleep(0.5)
    return record


class Reports:
    """The failures and node ends of one attempt of a run."""

    def __init__(self, run_dir: Path, attempt: int) -> None:
        self.folder = run_dir / "launch" / f"attempt-{attempt}"

    def rank_failed(self, failure: Failure) -> None:
        write_atomically(self.folder / f"rank-{failure.rank}.json", json.dumps(dataclasses.asdict(failure)) + "\n")

    def node_ended(self, node: int, host: str, exit_code: int, *, stopped_by: str | None) -> None:
        end = NodeEnd(node=node, host=host, exit_code=exit_code, stopped_by=stopped_by, at=time.time())
        write_atomically(self.folder / f"node-{node}.json", json.dumps(dataclasses.asdict(end)) + "\n")

    def failures(self) -> list[Failure]:
        return [Failure(**record) for record in self._read("rank-*.json")]

    def ended_nodes(self) -> dict[int, NodeEnd]:
        return {end.node: end for end in (NodeEnd(**record) for record in self._read("node-*.json"))}

    def signalled(self) -> bool:
        """Whether a stop signal stopped the workers of any node."""
        return any(end.stopped_by == "signal" for end in self.ended_nodes().values())

    def outcome(self, nodes: int, timeout_s: float) -> Failure | None:
        """The failure that ended this attempt, once every node has ended (or `timeout_s` passed): the
        earliest failure that is not a consequence of another (a rank blocked on a dead peer), counting a
        node whose workers ended badly without a word, and a node that never said it ended."""
        deadline = time.monotonic() + timeout_s
        while len(ended := self.ended_nodes()) < nodes and time.monotonic() < deadline:
            time.sleep(0.5)
        failures = self.failures()
        reported = {failure.node for failure in failures}
        for end in ended.values():
            if end.exit_code != 0 and end.stopped_by is None and end.node not in reported:
                failures.append(Failure(
                    node=end.node, host=end.host, kind="killed", at=end.at,
                    message=f"the workers on node {end.node} ({end.host}) ended with exit code {end.exit_code} "
                            "without recording an error (killed: out of memory, a signal, a crash?)"))
        for node in sorted(set(range(nodes)) - set(ended)):
            failures.append(Failure(node=node, host="?", kind="killed", at=time.time(),
                                    message=f"node {node} did not report how its workers ended within "
                                            f"{timeout_s:.0f} s (the machine or its runner process was lost?)"))
        return first_cause(failures)

    def _read(self, pattern: str) -> list[dict]:
        records = []
        for path in sorted(self.folder.glob(pattern)):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a file being replaced; it is read again on the next look
        return records


def first_cause(failures: list[Failure]) -> Failure | None:
    """The earliest failure that was not caused by another process going away (else the earliest)."""
    causes = [failure for failure in failures if not failure.secondary] or failures
    return min(causes, key=lambda failure: failure.at, default=None)


def verdict(state: str, cause: Failure | None, signalled: bool, exit_code: int) -> tuple[str, Failure | None]:
    """The run's final state once node 0's workers ended: from the manifest's `state` (rank 0's word), the
    launch's first failure and whether a stop signal stopped it; and the error to record (None: the
    manifest's stands)."""
    if cause is not None and cause.secondary and signalled:
        # A stop signal reaches the ranks at slightly different moments; a rank that stopped a step before
        # the others leaves them waiting for it, and their "peer gone" is part of the stop, not a failure.
        if state == "interrupted":
            return state, None
        return "interrupted", Failure(node=cause.node, host=cause.host, kind="interrupted", at=cause.at,
                                      message="stopped by a signal; not every rank stopped after the same step",
                                      hint="run the same plan again to resume from the last checkpoint")
    if cause is not None and state != "succeeded":
        return "failed", cause
    if state == "running":  # rank 0 ended without a word, and no other process said why
        return "failed", Failure(node=0, host="?", kind="killed", at=time.time(),
                                 message=f"the worker processes exited with code {exit_code}")
    return state, None
