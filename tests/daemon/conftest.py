"""Fixtures of the daemon tests: a plan template for the fake runner, and a daemon on a temporary folder."""

import pytest

from tests.daemon.harness import fake_daemon, spec_text


@pytest.fixture(scope="session")
def plan_template(tmp_path_factory, tiny_model_dir):
    from runner.plan.planner import make_plan
    from tests.conftest import write_jsonl
    from tests.plan.test_planner import CPU

    folder = tmp_path_factory.mktemp("template")
    (folder / "model").symlink_to(tiny_model_dir)
    write_jsonl(folder / "data" / "train.jsonl", [{"prompt": "q", "completion": "a"}] * 4)
    (folder / "job.yaml").write_text(spec_text("template"))
    path = folder / "plan.json"
    path.write_text(make_plan(folder / "job.yaml", run_root=folder, machine=CPU).model_dump_json())
    return path


@pytest.fixture
def daemon(tmp_path, plan_template, tiny_model_dir):
    created = fake_daemon(tmp_path, plan_template, tiny_model_dir)
    yield created
    created.close()
