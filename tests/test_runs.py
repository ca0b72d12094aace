"""Finding runs under a run root: by folder, spec file or spec name; the newest, or newest succeeded."""


import pytest

from runner.errors import RunnerError
from runner.runs import find_run, runs_under
from tests.helpers import BASE_SPEC


def test_every_run_is_found_once_oldest_first(root):
    found = runs_under(root)
    assert [(r.name, r.run_id[-4:], r.state) for r in found] == [
        ("other", "dddd", "running"), ("tiny", "aaaa", "succeeded"), ("tiny", "bbbb", "succeeded"),
        ("tiny", "cccc", "failed")]
    assert found[1].size() == 1000 + len((found[1].path / "manifest.json").read_bytes()) + 2


def test_a_name_takes_the_newest_succeeded_run(root):
    assert find_run("tiny", root, succeeded=True).run_id.endswith("bbbb")
    assert find_run("tiny", root, succeeded=False).run_id.endswith("cccc")
    assert find_run(str(root / "runs" / "tiny"), root, succeeded=True).run_id.endswith("bbbb")
    folder = root / "runs" / "tiny" / "20260101-000003-cccc"
    assert find_run(str(folder), root, succeeded=True).state == "failed"  # a run folder is taken as it is


def test_a_spec_file_finds_its_runs_through_its_name_and_outputs_dir(root, project):
    spec = project(BASE_SPEC)
    assert find_run(str(spec), root, succeeded=True).run_id.endswith("bbbb")


def test_no_run_or_no_succeeded_run_says_what_there_is(root):
    with pytest.raises(RunnerError, match="no runs of 'absent' under") as error:
        find_run("absent", root, succeeded=True)
    assert "runner runs" in error.value.hint
    with pytest.raises(RunnerError, match="'other' has no succeeded run yet: its latest, 20260101-000004-dddd, is running"):
        find_run("other", root, succeeded=True)
