"""A saved plan applies only to its inputs; checking that reads them in bounded time whatever they became."""

from __future__ import annotations

import os
import time

import pytest

from runner.plan.identity import StalePlanError, check_fresh
from runner.plan.planner import make_plan
from tests.conftest import TINY_SPEC
from tests.plan.test_planner import CPU


@pytest.mark.parametrize("replacement", ["fifo", "/dev/zero"])
def test_data_that_became_a_fifo_or_a_device_after_planning_is_refused_at_once(tiny_project, tmp_path, replacement):
    """`run --plan` re-hashed inputs with a plain open and read forever, holding the daemon's only slot
    (issue 20)."""
    spec = tiny_project(TINY_SPEC)
    plan = make_plan(spec, run_root=tmp_path / "runs", machine=CPU)
    data = tmp_path / "data" / "train.jsonl"
    data.unlink()
    if replacement == "fifo":
        os.mkfifo(data)
    else:
        data.symlink_to(replacement)
    started = time.monotonic()
    with pytest.raises(StalePlanError, match="not a regular file"):
        check_fresh(plan, tmp_path / "runs")
    assert time.monotonic() - started < 5
