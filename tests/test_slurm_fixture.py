"""The `cluster` fixture of tests/conftest.py: the README's test command never starts a Slurm cluster (no
apt-get, no system daemons); the Slurm tests run where one is up, skip where none is, and fail where CI
asks for one (RUNNER_REQUIRE_SLURM=1) and none is up. Run in a pytest of its own, with stand-in Slurm and
apt-get commands on the PATH that record being called."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PROBE = """
def test_probe(cluster):
    pass
"""


def stand_ins(folder: Path, node_state: str | None) -> Path:
    """sinfo answering `node_state` (None: no Slurm installed), sbatch, and apt-get, each logging its call."""
    folder.mkdir()
    names = ["apt-get", "slurmctld", "slurmd", "munged"] + (["sinfo", "sbatch"] if node_state else [])
    for name in names:
        answer = f"echo {node_state}" if name == "sinfo" else "true"
        (folder / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{folder}/calls"\n{answer}\n')
        (folder / name).chmod(0o755)
    return folder


def probe(tmp_path: Path, node_state: str | None, require: bool) -> tuple[subprocess.CompletedProcess, str]:
    bin_folder = stand_ins(tmp_path / "bin", node_state)
    test_file = REPO / "tests" / f"test_probe_{os.getpid()}_{tmp_path.name}.py"  # beside conftest.py
    test_file.write_text(PROBE)
    env = {key: value for key, value in os.environ.items() if key != "RUNNER_REQUIRE_SLURM"}
    env["PATH"] = str(bin_folder)  # nothing else: this machine may have a real Slurm
    if require:
        env["RUNNER_REQUIRE_SLURM"] = "1"
    try:
        completed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                                    str(test_file)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    finally:
        test_file.unlink()
    calls = bin_folder / "calls"
    return completed, calls.read_text() if calls.exists() else ""


def test_without_a_cluster_the_slurm_tests_skip_and_nothing_is_installed_or_started(tmp_path):
    completed, calls = probe(tmp_path, None, require=False)
    assert completed.returncode == 0 and "1 skipped" in completed.stdout, completed.stdout
    assert "sudo bash scripts/slurm-up" in completed.stdout
    assert calls == ""  # no apt-get, no slurmctld, slurmd or munged


def test_a_node_that_is_down_is_no_cluster(tmp_path):
    completed, calls = probe(tmp_path, "down*", require=False)
    assert "1 skipped" in completed.stdout and "no node is ready" in completed.stdout, completed.stdout
    assert "apt-get" not in calls and "slurmd" not in calls


def test_where_ci_asks_for_a_cluster_its_absence_fails_the_tests(tmp_path):
    completed, calls = probe(tmp_path, None, require=True)
    assert completed.returncode != 0 and "RUNNER_REQUIRE_SLURM=1 but no Slurm cluster" in completed.stdout
    assert calls == ""


def test_where_a_cluster_is_up_the_slurm_tests_run(tmp_path):
    completed, calls = probe(tmp_path, "idle", require=True)
    assert completed.returncode == 0 and "1 passed" in completed.stdout, completed.stdout
    assert calls == "sinfo -h -N -o %T\n"
