"""What the nodes of a launch tell each other: the launch record, and which failure ended an attempt."""

import pytest

from runner.errors import RunnerError
from runner.launch.records import (Failure, LaunchRecord, Reports, ensure_unused, first_cause, read_launch,
                                   record_launch, verdict, wait_for_launch)


def test_the_other_nodes_find_the_run_that_node_0_recorded(tmp_path):
    assert read_launch(tmp_path, "job-1") is None
    record = LaunchRecord(run_dir=str(tmp_path / "20260101-000000-abcd"), attempt=2, nodes=2)
    ensure_unused(tmp_path, "job-1")
    record_launch(tmp_path, "job-1", record)
    assert wait_for_launch(tmp_path, "job-1", timeout_s=1) == record
    with pytest.raises(RunnerError, match="launch id 'job-1' was used before"):
        ensure_unused(tmp_path, "job-1")


def test_a_node_0_that_never_starts_is_named_after_the_timeout(tmp_path):
    with pytest.raises(RunnerError, match="node 0 did not start launch 'job-2' within 0 s") as caught:
        wait_for_launch(tmp_path, "job-2", timeout_s=0.2)
    assert "storage that every node sees" in caught.value.hint


def _failure(rank, at, secondary=False, node=0, message="boom"):
    return Failure(node=node, host=f"n{node}", kind="runtime", message=message, at=at, rank=rank, secondary=secondary)


def test_the_first_failure_that_is_not_a_consequence_is_the_cause():
    consequence = _failure(0, at=1.0, secondary=True, message="Connection reset by peer")
    cause = _failure(1, at=2.0, node=1, message="ValueError: bad row")
    later = _failure(2, at=3.0, node=1)
    assert first_cause([consequence, later, cause]) == cause
    assert first_cause([consequence]) == consequence  # only consequences: the earliest still says something
    assert first_cause([]) is None
    assert cause.summary == "rank 1 on n1: ValueError: bad row"


def test_an_attempt_reports_rank_failures_and_silent_or_missing_nodes(tmp_path):
    reports = Reports(tmp_path, attempt=1)
    reports.node_ended(0, "n0", 0, stopped_by=None)
    assert reports.outcome(nodes=1, timeout_s=0) is None

    reports = Reports(tmp_path, attempt=2)
    reports.rank_failed(_failure(0, at=1.0, secondary=True, message="Connection reset by peer"))
    reports.node_ended(0, "n0", 1, stopped_by=None)
    reports.node_ended(1, "n1", -9, stopped_by=None)  # its worker was killed before it could report
    cause = reports.outcome(nodes=2, timeout_s=0)
    assert cause.kind == "killed" and cause.rank is None and cause.node == 1
    assert cause.summary.startswith("the workers on node 1 (n1) ended with exit code -9 without recording an error")

    reports = Reports(tmp_path, attempt=3)
    reports.node_ended(0, "n0", 1, stopped_by="failure")  # stopped because of another's failure: no cause
    assert reports.outcome(nodes=1, timeout_s=0) is None
    cause = reports.outcome(nodes=2, timeout_s=0.2)
    assert cause.node == 1 and "node 1 did not report how its workers ended within 0 s" in cause.message
    assert [end.node for end in reports.ended_nodes().values()] == [0]

    reports = Reports(tmp_path, attempt=4)
    reports.node_ended(0, "n0", 1, stopped_by="signal")  # torchrun's code after passing Ctrl-C or scancel on
    assert reports.outcome(nodes=1, timeout_s=0) is None and reports.signalled()
    assert not Reports(tmp_path, attempt=3).signalled()


def test_the_verdict_keeps_rank_0s_word_unless_another_process_says_otherwise():
    cause = _failure(1, at=1.0, node=1, message="ValueError: bad row")
    peer_gone = _failure(1, at=1.0, node=1, secondary=True, message="Connection reset by peer")
    assert verdict("succeeded", None, False, 0) == ("succeeded", None)
    assert verdict("interrupted", None, True, 1) == ("interrupted", None)
    assert verdict("failed", cause, False, 1) == ("failed", cause)  # rank 1's error replaces rank 0's
    assert verdict("succeeded", cause, False, 1) == ("succeeded", None)  # failed after the model was saved
    state, error = verdict("running", None, False, -9)
    assert state == "failed" and error.kind == "killed" and "exited with code -9" in error.message
    # a stop that reached one rank a step before the others: their "peer gone" is part of the stop
    assert verdict("interrupted", peer_gone, True, 1) == ("interrupted", None)
    state, error = verdict("failed", peer_gone, True, 1)
    assert state == "interrupted" and error.kind == "interrupted" and error.summary.startswith("stopped by a signal")
    assert verdict("failed", peer_gone, False, 1) == ("failed", peer_gone)  # no signal: a failure after all
