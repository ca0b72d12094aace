"""The job states table: its edges are the only changes of state the store makes, whoever asks."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from runner.daemon import states
from runner.daemon.states import GONE, TRANSITIONS, Status, TransitionRefused
from runner.daemon.store import Store

ALL: list[Status | None] = [GONE, *(status for status in TRANSITIONS if status is not None)]
EDGES = [(before, after) for before in ALL for after in TRANSITIONS[before]]
NON_EDGES = [(before, after) for before, after in itertools.product(ALL, ALL) if after not in TRANSITIONS[before]]


def route(to: Status) -> list[Status]:
    """The statuses from no row to `to`, along edges of the table (breadth first: a shortest way)."""
    came: dict = {GONE: None}
    queue = deque([GONE])
    while queue:
        here = queue.popleft()
        for there in TRANSITIONS[here]:
            if there not in came:
                came[there] = here
                queue.append(there)
    assert to in came, f"{to} cannot be reached from no row"
    path = [to]
    while came[path[-1]] is not GONE:
        path.append(came[path[-1]])
    return path[::-1]


def test_every_status_is_reachable_and_only_terminal_ones_can_be_final():
    for status in ALL[1:]:
        route(status)
        assert bool(TRANSITIONS[status] - {states.PLANNING, GONE}) or status.state.terminal, status
    assert TRANSITIONS[states.SUCCEEDED] == frozenset()  # a finished run is never run again


@pytest.mark.parametrize(("before", "after"), EDGES, ids=str)
def test_an_edge_of_the_table_is_allowed(before, after):
    states.check(before, after)


@pytest.mark.parametrize(("before", "after"), NON_EDGES, ids=str)
def test_anything_else_is_refused(before, after):
    with pytest.raises(TransitionRefused, match="is not a transition"):
        states.check(before, after)


def test_the_store_makes_the_edges_and_refuses_the_rest(tmp_path):
    store, _ = Store.for_daemon(tmp_path)
    for number, target in enumerate(ALL[1:]):
        path = route(target)
        job = store.add(f"/specs/{number}.yaml", f"{number:064x}", f"job-{number}", path[0])
        for status in path[1:]:
            assert store.move(job, status)
            job = store.get(job.id)
            assert job.status == status
        for after in ALL:
            if after in TRANSITIONS[target]:
                continue
            with pytest.raises(TransitionRefused):
                if after is GONE:
                    store.forget(job)
                else:
                    store.move(job, after)
            assert store.get(job.id).status == target  # refused before anything was written
    with pytest.raises(TransitionRefused):  # a change of other fields is no way round the table
        store.update(job.id, state="running")
    with pytest.raises(TransitionRefused):
        store.add("/specs/x.yaml", "f" * 64, "x", states.RUNNING)


def test_a_move_from_a_state_the_row_has_left_does_nothing(tmp_path):
    store, _ = Store.for_daemon(tmp_path)
    job = store.add("/specs/a.yaml", "a" * 64, "a", states.CHECKING)
    assert store.move(job, states.PLANNING)
    assert not store.move(job, states.CANCELLED)  # `job` was read while checking: it has moved since
    assert store.get(job.id).status == states.PLANNING
