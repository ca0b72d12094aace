import json
import subprocess
import sys

import pytest

from runner.cli import main
from runner.commands.validate import find_specs
from runner.install import pip_install
from runner.methods import registry
from tests.helpers import BASE_SPEC, REPO, TRAINING_STACK, assert_imports_none_of
from tests.datasets import save_to_disk, write_parquet


def test_valid_spec_exits_0(project, capsys):
    assert main(["validate", str(project(BASE_SPEC))]) == 0
    assert "1 spec checked: 1 valid, 0 invalid" in capsys.readouterr().out


def test_invalid_spec_exits_1_with_file_line_column(project, capsys):
    path = project(BASE_SPEC + "training:\n  lerning_rate: 1e-4\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path.name}:8:3: error: training.lerning_rate: unknown key 'lerning_rate'" in out
    assert "hint: did you mean 'learning_rate'?" in out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["validate", "--format", "xml", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: runner validate") and "runner validate: error: argument --format" in err
    assert main(["validate", str(tmp_path)]) == 2


@pytest.mark.parametrize("argv", [["validate", "--format", "json"], ["validate", "--format=json", "--bogus", "x"],
                                  ["plan", "--format", "json", "absent.yaml"], ["status", "--format", "json", "extra"]])
def test_usage_errors_are_json_when_json_is_asked_for(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert err == "" and report["valid"] is False and report["exit_code"] == 2
    (diagnostic,) = report["diagnostics"]
    assert diagnostic["severity"] == "error" and diagnostic["summary"]


def test_a_data_file_checks_the_specs_that_use_it(project, tmp_path, capsys):
    (tmp_path / ".git").mkdir()  # the search covers the repository
    (tmp_path / "nested").mkdir()
    using = project(BASE_SPEC.replace("data/train.jsonl", "../data/train.jsonl"), name="nested/job.yaml")
    project(BASE_SPEC.replace("train.jsonl", "other.jsonl"), name="other.yaml")
    (tmp_path / "data" / "other.jsonl").write_text('{"prompt": "q", "completion": "a"}\n')
    with open(tmp_path / "data" / "train.jsonl", "a") as data:
        data.write('{"prompt": "broken"}\n')
    assert main(["validate", str(tmp_path / "data" / "train.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "checked through" in out and "nested/job.yaml" in out and "other.yaml" not in out
    assert "train.jsonl:9:1: error" in out and "1 spec checked: 0 valid, 1 invalid" in out
    assert main(["validate", "--format", "json", str(tmp_path / "data" / "train.jsonl"), str(using)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report["files"]) == 1  # the spec named and found through its data is checked once
    assert report["data_files"][0]["specs"][0].endswith("nested/job.yaml")


def test_a_data_file_no_spec_uses_is_not_an_error(project, tmp_path, capsys):
    project(BASE_SPEC)
    (tmp_path / "data" / "notes.jsonl").write_text("{}\n")
    assert main(["validate", str(tmp_path / "data" / "notes.jsonl")]) == 0
    assert "notes.jsonl: no spec under" in capsys.readouterr().out


def test_a_lockfile_checks_the_specs_beside_it(project, tmp_path, capsys):
    project(BASE_SPEC)
    (tmp_path / "runner.lock").write_text("{not json")
    assert main(["validate", str(tmp_path / "runner.lock")]) == 1
    assert "runner.lock cannot be read" in capsys.readouterr().out


def test_json_output_is_shaped_like_terraform(project, capsys):
    path = project(BASE_SPEC.replace("method: sft", "method: sfft"))
    assert main(["validate", "--format", "json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and report["error_count"] == 1 and report["warning_count"] == 0
    (diagnostic,) = report["diagnostics"]
    assert diagnostic["severity"] == "error" and diagnostic["path"] == "method"
    assert diagnostic["range"]["start"] == {"line": 3, "column": 9}
    assert diagnostic["range"]["filename"].endswith("job.yaml")
    assert set(diagnostic) == {"severity", "summary", "detail", "range", "path", "hint"}
    assert report["files"][0]["valid"] is False


def test_folders_are_searched_for_specs_only(project, tmp_path, capsys):
    (tmp_path / "nested" / "deep").mkdir(parents=True)
    project(BASE_SPEC, name="nested/deep/one.yaml")
    (tmp_path / "notes.yaml").write_text("just: some config\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.yaml").write_text(BASE_SPEC)
    found = find_specs([str(tmp_path)])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["nested/deep/one.yaml"]


def test_every_example_spec_is_valid(capsys):
    examples = find_specs([str(REPO / "specs")])
    assert len(examples) >= 10
    code = main(["validate", "--format", "json", str(REPO / "specs")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, [d for d in report["diagnostics"] if d["severity"] == "error"]
    methods = {record["method"] for record in report["files"]}
    assert methods == set(registry.names())
    modes = {line.split(":")[1].strip() for path in examples for line in path.read_text().splitlines()
             if line.strip().startswith("mode:")}
    assert modes == {"full", "freeze", "lora"}


def test_validate_never_imports_the_training_stack():
    assert_imports_none_of(f"from runner.cli import main\nmain(['validate', {str(REPO / 'specs')!r}])",
                           (*TRAINING_STACK, "accelerate", "datasets", "tensorboardX", "mlflow", "wandb", "pyarrow",
                            "lm_eval", "bitsandbytes"))


def test_validating_a_spec_reads_its_own_methods_descriptor_only(project):
    """validate runs on every commit (pre-commit): an SFT spec imports no other method's descriptor, nor the
    declared rewards that the RL methods' sections hold (nor builds their validators), valid or not (the hint
    for a missing key reads that key's model alone)."""
    others = tuple(f"runner.methods.descriptors.{name}" for name in registry.names() if name != "sft")
    valid, unnamed = project(BASE_SPEC), project(BASE_SPEC.replace("name: tiny\n", ""), name="unnamed.yaml")
    assert_imports_none_of(f"from runner.cli import main\nassert main(['validate', {str(valid)!r}]) == 0\n"
                           f"assert main(['validate', {str(unnamed)!r}]) == 1", (*others, "runner.rewards.spec"))


def test_the_console_script_runs(project):
    completed = subprocess.run([sys.executable, "-m", "runner", "validate", str(project(BASE_SPEC))],
                               capture_output=True, text=True)
    assert completed.returncode == 0 and "1 valid" in completed.stdout


PARQUET_SPEC = BASE_SPEC.replace("train: data/train.jsonl", "train: [data/train.jsonl, data/extra.parquet]")


def test_a_parquet_file_or_a_file_in_a_saved_folder_checks_the_specs_that_use_it(project, tmp_path, capsys):
    """The pre-commit path: the hook passes the changed data file; the specs naming it (or its folder) are checked."""
    (tmp_path / ".git").mkdir()
    write_parquet(tmp_path / "data" / "extra.parquet", [{"prompt": "p", "completion": "c"}, {"prompt": "p"}])
    project(PARQUET_SPEC)
    saved = save_to_disk(tmp_path / "data" / "saved", {"train": [{"prompt": "p", "completion": "c"}]})
    project(BASE_SPEC.replace("train: data/train.jsonl", "train: {path: data/saved}"), name="saved.yaml")
    project(BASE_SPEC, name="plain.yaml")
    assert main(["validate", str(tmp_path / "data" / "extra.parquet")]) == 1
    out = capsys.readouterr().out
    assert "extra.parquet: checked through " in out and "job.yaml" in out and "plain.yaml" not in out
    assert 'extra.parquet: error: data.train: row index 1: "completion" must be a string, not null' in out
    arrow = next((saved / "train").glob("*.arrow"))
    assert main(["validate", str(arrow)]) == 0
    out = capsys.readouterr().out
    assert "checked through " in out and "saved.yaml" in out and "job.yaml" not in out


BLOCK_PYARROW = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocker())
from runner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_pyarrow_validate_warns_what_it_could_not_check(project, tmp_path):
    write_parquet(tmp_path / "data" / "extra.parquet", [{"prompt": "p"}])  # a bad row, unseen without pyarrow
    path = project(PARQUET_SPEC)
    completed = subprocess.run([sys.executable, "-c", BLOCK_PYARROW, "validate", str(path)], capture_output=True,
                               text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert ("warning: data.train[1]: data/extra.parquet: pyarrow is not installed, so its parquet rows could not be "
            f"read ({pip_install('data')})") in completed.stdout
    assert "1 valid, 0 invalid (0 errors, 1 warning)" in completed.stdout
    (tmp_path / "data" / "extra.parquet").write_text('{"prompt": "p"}\n')  # what can be checked still is
    completed = subprocess.run([sys.executable, "-c", BLOCK_PYARROW, "validate", str(path)], capture_output=True,
                               text=True, cwd=tmp_path)
    assert completed.returncode == 1 and "data/extra.parquet is not a parquet file" in completed.stdout


def test_escape_sequences_in_file_names_and_cells_are_printed_as_text(project, capsys):
    """A data file's name (in a folder the spec names) and a CSV header cell holding ESC sequences (window
    title, clear screen) reach the terminal as visible escapes (issue 20)."""
    path = project(BASE_SPEC)
    rows = path.parent / "data" / "rows"
    rows.mkdir()
    (rows / "t\x1b]0;x\x07.jsonl").write_text('{"prompt": 1, "completion": "a"}\n')
    path.write_text(path.read_text().replace("train: data/train.jsonl", "train: data/rows"))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "t\\x1b]0;x\\x07.jsonl" in out and "\x1b" not in out and "\x07" not in out, out
    (path.parent / "data" / "cells.csv").write_text("q\x1b[2J,a\n1,2\n")
    path.write_text(path.read_text().replace("train: data/rows",
                                             "train: {path: data/cells.csv, columns: {prompt: question}}"))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "has no column 'question'" in out and "q\\x1b[2J" in out and "\x1b" not in out, out


def test_a_data_file_outside_any_repository_is_not_searched_for_from_the_root(tmp_path):
    """`runner validate /tmp/x.jsonl` searched the whole filesystem for specs using it (issue 20)."""
    from pathlib import Path

    from runner.commands.validate import OUTSIDE_REPOSITORY_DEPTH, search_root

    top = Path("/" + tmp_path.parts[1])  # a folder right below the root, outside any repository
    assert search_root(top / "x.jsonl") == (top, OUTSIDE_REPOSITORY_DEPTH)
    nested = tmp_path / "specs" / "data" / "x.jsonl"
    assert search_root(nested) == (tmp_path / "specs", OUTSIDE_REPOSITORY_DEPTH)
    (tmp_path / ".git").mkdir()
    assert search_root(nested)[0] == tmp_path


def test_a_spec_named_twice_is_checked_and_counted_once(project, tmp_path, capsys, monkeypatch):
    spec = project(BASE_SPEC)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(spec), "job.yaml", "./job.yaml", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("1 spec checked: 1 valid, 0 invalid"), out
