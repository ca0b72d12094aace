"""The pip command that adds an extra installs it from where runner came from (pip's direct_url.json), so
that every hint works as printed: runner-finetune is not on an index. The real installs (a wheel and a git
URL, each in a clean venv, and a printed hint run as it is) are .ci/install-check's."""

import subprocess
import sys

from runner.install import install_command, pip_install
from tests.conftest import REPO


def test_a_git_install_adds_extras_from_the_same_commit():
    record = {"url": "https://example.org/team/runner.git",
              "vcs_info": {"vcs": "git", "commit_id": "0123abc", "requested_revision": "v0.1.0"}}
    assert install_command("wandb", record) == \
        "pip install 'runner-finetune[wandb] @ git+https://example.org/team/runner.git@0123abc'"


def test_a_wheel_or_a_folder_adds_extras_from_that_file():
    wheel = {"url": "file:///srv/wheels/runner_finetune-0.1.0-py3-none-any.whl", "archive_info": {}}
    assert install_command("data", wheel) == \
        "pip install 'runner-finetune[data] @ file:///srv/wheels/runner_finetune-0.1.0-py3-none-any.whl'"
    assert install_command("train", {"url": "file:///home/a/runner", "dir_info": {}}) == \
        "pip install 'runner-finetune[train] @ file:///home/a/runner'"


def test_an_editable_clone_stays_editable():
    record = {"url": "file:///home/a/my%20runner", "dir_info": {"editable": True}}
    assert install_command("mlflow", record) == "pip install -e '/home/a/my runner[mlflow]'"


def test_without_a_record_the_index_form():
    assert install_command("tensorboard", None) == "pip install 'runner-finetune[tensorboard]'"


def test_this_environment_s_hint_names_where_it_was_installed_from():
    """The project's .venv is an editable install of this clone (scripts/env.sh), whatever folder the
    command runs in: a stale runner_finetune.egg-info in the clone (which has no record) is not taken."""
    shown = subprocess.run([sys.executable, "-c", "from runner.install import pip_install; print(pip_install('x'))"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert shown == pip_install("x")
    if "-e" in shown.split():
        assert shown == f"pip install -e '{REPO}[x]'"
