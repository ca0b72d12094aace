"""Placing a plan's processes: the flags and environment of a node, torchrun's command line, and two nodes
meeting at a rendezvous on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import UsageError
from runner.launch.local import Placement, placement, torchrun_command
from runner.manifest import Manifest
from tests.helpers import TINY_SPEC

ONE_STEP = ("training:\n  max_steps: 1\n  batch_size: 8\n  learning_rate: 1.0e-2\ntrainable:\n  mode: full\n"
            "outputs:\n  save: full\nhardware:\n  device: cpu\n")


def test_one_node_needs_no_rendezvous_and_refuses_one():
    assert placement(1, environ={}) == Placement()
    assert placement(1, environ={"RUNNER_LAUNCH_ID": "slurm-7-0"}).launch_id == "slurm-7-0"
    with pytest.raises(UsageError, match="runs on one node"):
        placement(1, rendezvous="node0:29500", environ={})


def test_several_nodes_take_their_place_from_flags_or_the_environment():
    from_flags = placement(2, rendezvous="node0:29500", node_rank=1, launch_id="try-1", environ={})
    assert from_flags == Placement(nodes=2, node_rank=1, rendezvous="node0:29500", launch_id="try-1")
    slurm = {"RUNNER_RENDEZVOUS": "c001:29517", "RUNNER_LAUNCH_ID": "slurm-17-0", "SLURM_NODEID": "1"}
    assert placement(2, environ=slurm) == Placement(nodes=2, node_rank=1, rendezvous="c001:29517",
                                                    launch_id="slurm-17-0")
    assert placement(2, environ={**slurm, "RUNNER_NODE_RANK": "0"}).leads


@pytest.mark.parametrize("flags, message", [
    ({}, "give --rendezvous HOST:PORT, --node-rank, --launch-id"),
    ({"rendezvous": "node0", "node_rank": 0, "launch_id": "a"}, "'node0' is not HOST:PORT"),
    ({"rendezvous": "node0:29500", "node_rank": 2, "launch_id": "a"}, "node rank '2' is not one of 0..1"),
    ({"rendezvous": "node0:29500", "node_rank": 0, "launch_id": "../x"}, "not usable as a file name"),
])
def test_a_node_without_a_usable_place_is_told_what_to_give(flags, message):
    with pytest.raises(UsageError, match=message):
        placement(2, environ={}, **flags)


def test_torchrun_command_for_one_node_and_for_one_of_several():
    one = torchrun_command("/py", 2, Placement(), ["run", "--plan", "p.json"])
    assert one[:4] == ["/py", "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in one and one[-4:] == ["runner", "run", "--plan", "p.json"]
    second = torchrun_command("/py", 4, Placement(2, 1, "node0:29500", "job-9"), ["run"])
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", "--rdzv-id=job-9",
            "--nproc-per-node=4", "--max-restarts=0"} <= set(second)
    assert any(arg.startswith("--rdzv-conf=is_host=false") for arg in second)  # node 0 hosts the store


def test_a_plan_on_several_nodes_runs_from_a_saved_plan_only(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + ONE_STEP + "  nodes: 2\n")
    code = main(["run", str(spec), "--runs-dir", str(tmp_path), "--quiet", "--rendezvous", "127.0.0.1:1",
                 "--node-rank", "0", "--launch-id", "x"])
    assert code == 2 and "every node must run the same saved plan" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --- two nodes on loopback ----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node(plan: Path, root: Path, rank: int, port: int, launch_id: str, *, like_slurm: bool = False):
    """One node's `runner run`: its place from the flags, or from the environment as Slurm's script sets it."""
    command = [sys.executable, "-m", "runner", "run", "--plan", str(plan), "--runs-dir", str(root), "--quiet"]
    place = {"RUNNER_RENDEZVOUS": f"127.0.0.1:{port}", "SLURM_NODEID": str(rank), "RUNNER_LAUNCH_ID": launch_id}
    if not like_slurm:
        command += ["--rendezvous", place["RUNNER_RENDEZVOUS"], "--node-rank", str(rank), "--launch-id", launch_id]
    return subprocess.Popen(command, env={**os.environ, **place} if like_slurm else None,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _saved_plan(spec: Path, root: Path, name: str) -> Path:
    out = root / name
    assert main(["plan", str(spec), "--out", str(out), "--runs-dir", str(root)]) == 0
    return out


def _trained(root: Path, name: str):
    from safetensors.torch import load_file

    (manifest_file,) = (root / "runs" / name).glob("*/manifest.json")
    manifest = Manifest.model_validate_json(manifest_file.read_text())
    losses = [json.loads(line)["loss"] for line in (manifest_file.parent / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return manifest, losses, load_file(manifest_file.parent / "model" / "model.safetensors")


@pytest.mark.slow
def test_two_nodes_on_loopback_compute_the_step_of_one_node_with_two_processes(tiny_project, tmp_path, capsys):
    two_nodes = _saved_plan(tiny_project(TINY_SPEC.replace("name: tiny", "name: nodes") + ONE_STEP + "  nodes: 2\n",
                                         "nodes.yaml"), tmp_path, "nodes.json")
    one_node = _saved_plan(tiny_project(TINY_SPEC.replace("name: tiny", "name: local") + ONE_STEP + "  gpus: 2\n",
                                        "local.yaml"), tmp_path, "local.json")
    port = _free_port()
    nodes = [_node(two_nodes, tmp_path, 1, port, "loopback-1", like_slurm=True),  # node 1 may come first
             _node(two_nodes, tmp_path, 0, port, "loopback-1")]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "nodes: SUCCEEDED" in outputs[1] and "node 1: its workers ended with exit code 0" in outputs[0]
    assert main(["run", "--plan", str(one_node), "--runs-dir", str(tmp_path), "--quiet"]) == 0

    manifest, losses, weights = _trained(tmp_path, "nodes")
    reference, reference_losses, reference_weights = _trained(tmp_path, "local")
    assert manifest.plan.device.nodes == 2 and manifest.plan.device.count == 2 and len(manifest.attempts) == 1
    assert reference.plan.device.nodes == 1 and reference.plan.device.count == 2
    assert losses == pytest.approx(reference_losses, abs=1e-6) and len(losses) == 1
    changed = 0
    for name, tensor in reference_weights.items():
        assert (weights[name] - tensor).abs().max().item() <= 1e-6, name
        changed += bool(manifest.parameters and name in manifest.parameters.changed)
    assert changed > 0  # the step moved the weights, identically on both layouts
    assert len(list((tmp_path / "runs" / "nodes").glob("*/manifest.json"))) == 1


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        kids = [int(child) for child in children.read_text().split()] if children.exists() else []
        found += kids
        frontier += kids
    return found


def _is_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"runner" in command and b"torch.distributed.run" not in command


@pytest.mark.slow
def test_a_worker_killed_on_node_1_fails_the_run_with_that_node_named(tiny_project, tmp_path):
    spec = tiny_project(TINY_SPEC + "training:\n  max_steps: 2000\n  batch_size: 2\n  learning_rate: 1.0e-3\n"
                        "hardware:\n  device: cpu\n  nodes: 2\n")
    plan = _saved_plan(spec, tmp_path, "plan.json")
    port = _free_port()
    leader, follower = (_node(plan, tmp_path, rank, port, "doomed-1") for rank in (0, 1))
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs" / "tiny").glob("*/metrics.jsonl")):  # training has begun
        assert time.monotonic() < deadline and leader.poll() is None, leader.communicate()[0]
        time.sleep(0.2)
    (worker,) = [pid for pid in _descendants(follower.pid) if _is_worker(pid)]
    os.kill(worker, signal.SIGKILL)

    output = leader.communicate(timeout=240)[0]
    follower.communicate(timeout=60)
    assert leader.returncode == 1 and follower.returncode != 0, output
    (manifest_file,) = (tmp_path / "runs" / "tiny").glob("*/manifest.json")
    manifest = Manifest.model_validate_json(manifest_file.read_text())
    assert manifest.state == "failed" and manifest.attempts[-1].state == "failed"
    assert manifest.error.kind == "killed"
    assert manifest.error.message.startswith("the workers on node 1 ")
