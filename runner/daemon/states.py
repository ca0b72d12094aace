"""A daemon job's states and the transitions between them: the one table the store enforces.

A job is in one State. A queued job is also at one Step on its way to starting, so that
`runner status` and the page can say why it waits:

    (found) -> queued: checking -> queued: dependency -> queued: planning -> queued: resources -> running
                  |  \\-> invalid                              \\-> failed (plan)     (devices, a slot, its turn)
                  \\-> (forgotten: its file went away before it was admitted)
    running <-> recovering -> succeeded | failed | cancelled

Every change of state goes through `Store.move` (a compare-and-set on the state as read) and must
be an edge of TRANSITIONS; any other is refused, whoever asks (the daemon, `runner cancel`,
`runner retry`). Changes of other fields (the reason, progress facts) are not transitions. A failed
job's kind is one of runner.failures.Failure, as its run recorded it.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class State(str, Enum):
    INVALID = "invalid"
    QUEUED = "queued"
    RUNNING = "running"
    RECOVERING = "recovering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED, State.INVALID)


class Step(str, Enum):
    """Where a queued job is on its way to starting (only queued jobs have one)."""

    CHECKING = "checking"
    """Waiting to be checked, or being checked (admission: validate's report on its snapshot)."""
    DEPENDENCY = "dependency"
    """Waiting for the specs it builds on ({job: NAME}) to succeed."""
    PLANNING = "planning"
    """Waiting to be planned, or being planned (the plan's estimate picks its devices)."""
    RESOURCES = "resources"
    """Planned; waiting for its devices (GPUs with enough free memory), a job slot, or its turn."""


class Status(NamedTuple):
    state: State
    step: Step | None = None

    def __str__(self) -> str:
        return f"{self.state.value}: {self.step.value}" if self.step else self.state.value


GONE = None
"""Not a row: before a job is added, and after a row is forgotten."""

CHECKING = Status(State.QUEUED, Step.CHECKING)
DEPENDENCY = Status(State.QUEUED, Step.DEPENDENCY)
PLANNING = Status(State.QUEUED, Step.PLANNING)
RESOURCES = Status(State.QUEUED, Step.RESOURCES)
RUNNING = Status(State.RUNNING)
RECOVERING = Status(State.RECOVERING)
SUCCEEDED = Status(State.SUCCEEDED)
FAILED = Status(State.FAILED)
CANCELLED = Status(State.CANCELLED)
INVALID = Status(State.INVALID)

TRANSITIONS: dict[Status | None, frozenset[Status | None]] = {
    # a spec's content is found (checking), or too large to check (invalid); a run directory the store
    # does not know is recorded as what its manifest says
    GONE: frozenset({CHECKING, INVALID, SUCCEEDED, FAILED, RECOVERING}),
    # admitted (waiting for its dependencies, or to be planned), or refused; forgotten when its file
    # went away or changed before it was admitted; cancelled by a person; failed by a daemon error
    CHECKING: frozenset({DEPENDENCY, PLANNING, INVALID, GONE, CANCELLED, FAILED}),
    DEPENDENCY: frozenset({PLANNING, CANCELLED, FAILED}),
    # planned; or back to its dependencies (moved to another folder, retried); the plan failed
    PLANNING: frozenset({RESOURCES, DEPENDENCY, FAILED, CANCELLED}),
    # started; planned again (its spec moved to another folder, where paths resolve differently)
    RESOURCES: frozenset({RUNNING, PLANNING, FAILED, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, RECOVERING}),
    # resumed; or its run directory says it finished
    RECOVERING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset({PLANNING}),  # runner retry
    CANCELLED: frozenset({PLANNING}),  # runner retry; or withdrawn content that came back
    INVALID: frozenset({GONE}),  # runner retry: checked again from the start
}


class TransitionRefused(Exception):
    """A change of state that is not an edge of the table: a bug, never a user's mistake."""


def check(before: Status | None, after: Status | None) -> None:
    if after not in TRANSITIONS.get(before, frozenset()):
        raise TransitionRefused(f"{_name(before)} -> {_name(after)} is not a transition of the job table "
                                "(runner.daemon.states)")


def _name(status: Status | None) -> str:
    return "(no row)" if status is None else str(status)
