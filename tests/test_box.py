"""runner.box: where this box's runs and daemon state live, from the command line, the environment, the
person's config over the box's, or the defaults; a config file that cannot be used is a clear error."""

from pathlib import Path

import pytest

from runner import box
from runner.errors import UsageError


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """The box's and the person's config files (not written yet), and a clean environment."""
    for variable in ("RUNNER_CONFIG", "RUNNER_RUNS_DIR", "RUNNER_STATE_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(box, "BOX_CONFIG", tmp_path / "etc" / "config.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "home" / "runner").mkdir(parents=True)
    return tmp_path / "etc" / "config.yaml", tmp_path / "home" / "runner" / "config.yaml"


def test_the_first_place_that_says_it_wins(configs, tmp_path, monkeypatch):
    box_file, person_file = configs
    assert box.run_root(None) == tmp_path and box.daemon_run_root(None, tmp_path / "s") == tmp_path / "s"
    box_file.write_text("runs_dir: /srv/runs\nstate_dir: /srv/state\n")
    assert (box.run_root(None), box.state_directory(None)) == (Path("/srv/runs"), Path("/srv/state"))
    assert box.daemon_run_root(None, Path("/srv/state")) == Path("/srv/runs")
    person_file.write_text("runs_dir: mine\n")  # relative to the file's folder
    assert box.run_root(None) == person_file.parent / "mine" and box.state_directory(None) == Path("/srv/state")
    monkeypatch.setenv("RUNNER_RUNS_DIR", "/env/runs")
    assert box.run_root(None) == Path("/env/runs") and box.run_root("given") == tmp_path / "given"
    monkeypatch.setenv("RUNNER_CONFIG", str(tmp_path / "only.yaml"))  # alone: neither file is read
    (tmp_path / "only.yaml").write_text("state_dir: /only/state\n")
    assert box.state_directory(None) == Path("/only/state")


@pytest.mark.parametrize("text, message", [
    ("run_dir: /x\n", "unknown key 'run_dir'"),
    ("- /x\n", "expected a mapping of keys"),
    ("runs_dir: [a]\n", "runs_dir must be a folder's path"),
    ("runs_dir: {\n", "cannot be read as runner's config"),
])
def test_a_config_that_cannot_be_used_says_why(configs, text, message):
    box_file, _ = configs
    box_file.write_text(text)
    with pytest.raises(UsageError, match=message) as raised:
        box.run_root(None)
    assert str(box_file) in raised.value.message and "runs_dir" in raised.value.hint


def test_a_config_named_by_the_environment_must_be_there(configs, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(UsageError, match="missing.yaml: cannot be read"):
        box.state_directory(None)
