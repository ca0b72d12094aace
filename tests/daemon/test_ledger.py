"""The run directories as the record: a finished manifest's outcome is the job's, its failure kind as the run
recorded it (runner.failures: one vocabulary, no mapping)."""

import socket

import pytest

from runner.daemon import ledger
from runner.daemon.states import State
from runner.failures import FAILURE_KINDS, Failure
from runner.manifest import Attempt, Environment, Manifest, RunError, Timings
from runner.plan.models import Plan


@pytest.fixture(scope="module")
def plan(plan_template) -> Plan:
    return Plan.model_validate_json(plan_template.read_text())


def manifest(plan: Plan, state: str, error: RunError | None = None) -> Manifest:
    return Manifest(run_id="r", name=plan.name, method=plan.method, state=state, error=error,
                    attempts=[Attempt(number=1, started_at="2025-01-01T00:00:00+00:00", pid=1, host="h")],
                    spec_path=plan.inputs.spec_path, spec_sha256="0" * 64, plan_sha256="1" * 64, plan=plan,
                    base_model=plan.inputs.base_model, timings=Timings(started_at="2025-01-01T00:00:00+00:00"),
                    environment=Environment(python="3", platform="test", host=socket.gethostname(), versions={}))


def test_every_failure_kind_is_recorded_as_itself(plan):
    assert len(FAILURE_KINDS) == len(set(FAILURE_KINDS)) and Failure.GATE.value in FAILURE_KINDS
    for kind in FAILURE_KINDS:
        recorded = ledger.outcome(manifest(plan, "failed", RunError(kind=kind, message=f"it failed ({kind})")))
        assert (recorded.state, recorded.failure, recorded.reason) == (State.FAILED, kind, f"it failed ({kind})")


def test_only_finished_manifests_are_outcomes(plan):
    assert ledger.outcome(manifest(plan, "succeeded")) == ledger.Outcome(State.SUCCEEDED, None, "succeeded")
    for state in ("running", "interrupted"):
        assert ledger.outcome(manifest(plan, state)) is None
