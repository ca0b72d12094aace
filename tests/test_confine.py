"""Confinement (issue 20): under the watch daemon a spec reads only what its author could, inside its
folder, and what the operator granted; nothing it reads is quoted back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import confine
from runner.confine import Confinement, Refused
from runner.readers import open_regular, read_regular
from runner.spec.check import check_spec
from tests.conftest import write_jsonl

SECRET = "hf_s3cr3tT0k3n"
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="files of another owner need root to make")


@pytest.fixture
def box(tmp_path):
    """A watched folder, a granted folder and a secret outside both."""
    watched, granted, home = tmp_path / "watched", tmp_path / "granted", tmp_path / "home"
    for folder in (watched, granted, home):
        folder.mkdir()
    (home / "token.csv").write_text(f"{SECRET},x\n1,2\n")
    (granted / "shared.jsonl").write_text('{"text": "shared"}\n')
    (watched / "own.jsonl").write_text('{"text": "own"}\n')
    return watched, granted, home


def confined(watched: Path, granted: Path, author: int | None = None) -> Confinement:
    return Confinement(os.path.realpath(watched), author, (os.path.realpath(granted),))


def test_inside_the_folder_and_granted_roots_are_readable_and_nothing_else(box):
    watched, granted, home = box
    (watched / "link.csv").symlink_to(home / "token.csv")
    with confine.applied(confined(watched, granted)):
        assert read_regular(watched / "own.jsonl", 100) == b'{"text": "own"}\n'
        assert read_regular(granted / "shared.jsonl", 100)
        for path in (home / "token.csv", watched / "link.csv", watched / ".." / "home" / "token.csv"):
            with pytest.raises(Refused, match="outside the watched folder"):
                open_regular(path)
    assert read_regular(watched / "link.csv", 100).startswith(SECRET.encode())  # unconfined: the user's own read


def test_a_missing_path_outside_is_refused_not_reported_missing(box):
    """No existence oracle: a spec learns nothing about what lies outside."""
    watched, granted, home = box
    with confine.applied(confined(watched, granted)):
        for written in (str(home / "token.csv"), str(home / "absent.csv"), "../home/absent.csv"):
            with pytest.raises(Refused, match="outside the watched folder"):
                confine.named_path(watched, written)
        with pytest.raises(confine.Missing, match="absent.jsonl does not exist"):
            confine.named_path(watched, "absent.jsonl")


def test_a_link_loop_is_said_as_one(box):
    watched, _, _ = box
    (watched / "a.jsonl").symlink_to(watched / "b.jsonl")
    (watched / "b.jsonl").symlink_to(watched / "a.jsonl")
    with pytest.raises(confine.Missing, match="a.jsonl is a symbolic link that loops"):
        confine.named_path(watched, "a.jsonl")


def test_the_opened_descriptor_is_checked_not_the_name(box, monkeypatch):
    """A link swapped between a check of the name and the open gains nothing: the opened file's own path
    is what is checked."""
    watched, granted, home = box
    link = watched / "data.csv"
    link.symlink_to(watched / "own.jsonl")
    with confine.applied(confined(watched, granted)):
        confine.check(link)  # fine now
        link.unlink()
        link.symlink_to(home / "token.csv")  # swapped after the check
        with pytest.raises(Refused):
            open_regular(link)


@as_root
def test_inside_the_folder_only_what_the_author_could_read(box):
    watched, granted, _ = box
    private = watched / "team-a"
    private.mkdir(mode=0o700)
    (private / "rows.jsonl").write_text('{"text": "a"}\n')
    (watched / "closed.jsonl").write_text('{"text": "b"}\n')
    os.chmod(watched / "closed.jsonl", 0o600)
    os.chmod(watched, 0o755)
    os.chmod(watched / "own.jsonl", 0o644)
    with confine.applied(confined(watched, granted, author=NOBODY)):
        assert read_regular(watched / "own.jsonl", 100)
        with pytest.raises(Refused, match=f"its author \\(uid {NOBODY}\\) may not read .*team-a"):
            open_regular(private / "rows.jsonl")
        with pytest.raises(Refused, match="closed.jsonl"):
            open_regular(watched / "closed.jsonl")
        os.chown(watched / "closed.jsonl", NOBODY, -1)  # now theirs
        assert read_regular(watched / "closed.jsonl", 100)


def test_the_confinement_reaches_children_through_the_environment(box):
    watched, granted, _ = box
    rule = confined(watched, granted)
    with confine.applied(rule):
        assert Confinement.from_json(__import__("json").loads(os.environ[confine.ENVIRONMENT])) == rule
    assert confine.ENVIRONMENT not in os.environ and confine.active() is None


SPEC = """version: 1
name: leak
method: sft
base_model: {model}
data:
  train: {data}
"""


def validate_confined(folder: Path, spec: str, rule: Confinement | None) -> str:
    path = folder / "leak.yaml"
    path.write_text(spec)
    with confine.applied(rule):
        result = check_spec(path)
    return "\n".join(d.format_text() for d in result.diagnostics)


@pytest.mark.parametrize("data", ["link.csv", "{home}/token.csv", "../home/token.csv"])
def test_validate_under_the_daemon_never_reads_or_quotes_a_file_outside(box, tiny_model_dir, data):
    watched, granted, home = box
    (watched / "link.csv").symlink_to(home / "token.csv")
    (watched / "model").symlink_to(tiny_model_dir)
    spec = SPEC.format(model="./model", data={"path": data.format(home=home), "columns": {"prompt": "q"}}
                       .__repr__().replace("'", '"'))
    rule = Confinement(os.path.realpath(watched), None, (os.path.realpath(granted), os.path.realpath(tiny_model_dir)))
    text = validate_confined(watched, spec, rule)
    assert "outside the watched folder" in text and SECRET not in text
    assert SECRET in validate_confined(watched, spec, None)  # validate as the user: their own file, their columns


def test_under_the_daemon_a_file_in_the_folder_is_checked_but_not_quoted(box, tiny_model_dir):
    watched, granted, _ = box
    (watched / "model").symlink_to(tiny_model_dir)
    (watched / "rows.csv").write_text(f"{SECRET},answer\nq,a\n")
    write_jsonl(watched / "keys.jsonl", [{SECRET: 1}])
    rule = Confinement(os.path.realpath(watched), None, (os.path.realpath(tiny_model_dir),))
    csv = SPEC.format(model="./model", data='{path: rows.csv, columns: {prompt: question}}')
    jsonl = SPEC.format(model="./model", data="keys.jsonl")
    for spec in (csv, jsonl):
        text = validate_confined(watched, spec, rule)
        assert confine.NOT_SHOWN in text and SECRET not in text, text
        assert SECRET in validate_confined(watched, spec, None)


def test_a_model_link_out_of_the_folder_is_refused(box, tiny_model_dir):
    watched, granted, _ = box
    (watched / "model").symlink_to(tiny_model_dir)
    text = validate_confined(watched, SPEC.format(model="./model", data="own.jsonl"), confined(watched, granted))
    assert "base_model" in text and "outside the watched folder" in text


def test_a_plan_records_its_confinement_and_a_swapped_input_is_refused_at_run(box, tiny_model_dir):
    from runner.plan.identity import StalePlanError, check_fresh
    from runner.plan.planner import make_plan
    from tests.plan.test_planner import CPU

    watched, granted, home = box
    (watched / "model").symlink_to(tiny_model_dir)
    write_jsonl(watched / "data.jsonl", [{"prompt": "q", "completion": "a"}] * 4)
    (home / "rows.jsonl").write_text('{"prompt": "secret", "completion": "x"}\n' * 4)
    (watched / "job.yaml").write_text(SPEC.format(model="./model", data="data.jsonl"))
    rule = Confinement(os.path.realpath(watched), None, (os.path.realpath(granted), os.path.realpath(tiny_model_dir)))
    with confine.applied(rule):
        plan = make_plan(watched / "job.yaml", run_root=watched / "runs", machine=CPU)
    assert plan.confinement == rule
    (watched / "data.jsonl").unlink()
    (watched / "data.jsonl").symlink_to(home / "rows.jsonl")  # swapped after planning
    with confine.applied(plan.confinement), pytest.raises(StalePlanError, match="outside the watched folder"):
        check_fresh(plan, watched / "runs")
