"""FSDP on two CPU processes (gloo), against one process: the same step, the same run across an
interruption and a change of device count, and an ordinary model folder at the end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from runner.cli import main
from runner.execute import checkpoints, loading
from runner.execute import trainable as trained
from runner.execute.batches import step_micro_batches
from runner.execute.data import prepare
from runner.execute.job import run_plan
from runner.execute.settings import Settings
from runner.manifest import Manifest
from runner.methods import registry
from runner.methods.sft import accumulate_gradients, prepared
from runner.plan.planner import make_plan
from runner.rundir import RunDirectory
from tests.conftest import REPO, TINY_SPEC, finished_checkpoints
from tests.plan.test_planner import CPU

TWO_PROCESSES = "hardware:\n  device: cpu\n  gpus: 2\n  strategy: fsdp\n"
STEP_TOLERANCE = dict(rtol=1e-5, atol=1e-7)
"""fp32 on the CPU: the sharded step sums in another order (reduce-scatter), nothing else differs."""


def plan_for(write_spec, extra: str, name: str = "job.yaml"):
    path = write_spec(TINY_SPEC + extra, name)
    return make_plan(path, run_root=path.parent, machine=CPU)


def single_process_step(plan) -> dict[str, torch.Tensor]:
    """The same step as tests/execute/fsdp_step.py, with the executor's unsharded model."""
    location = loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    torch.manual_seed(plan.value("training.seed"))
    settings = Settings.of_plan(plan)
    model = prepared(trained.apply(loading.load_model(location, registry.get(plan.method).head,
                                                      loading.weights_dtype(plan)), plan), settings.training)
    rows = prepare(plan, tokenizer)["train"].examples[:plan.value("training.batch_size")]
    micros, targets, _ = step_micro_batches(
        rows, micro=plan.value("training.batch_size"), packing=plan.value("sft.packing"),
        max_length=plan.value("training.max_length"), pad_id=tokenizer.pad_token_id)
    model.train()
    loss = accumulate_gradients(model, micros, targets, 1, torch.device("cpu"))
    return {**{name: p.grad for name, p in model.named_parameters() if p.grad is not None}, "loss": loss.reshape(1)}


def test_one_fsdp_step_equals_the_single_process_step(tiny_project, tmp_path):
    """Full training, LoRA (with a trained copy of the norms), and full with gradient checkpointing."""
    extra = "training:\n  batch_size: 8\n  max_steps: 1\n" + TWO_PROCESSES
    lora = "trainable:\n  mode: lora\n  lora: {r: 4, dropout: 0.0}\n  also: [norm]\n"  # dropout masks are random
    checkpointing = "  gradient_checkpointing: true\n"
    plans = {"full": plan_for(tiny_project, extra, "full.yaml"),
             "lora": plan_for(tiny_project, extra + lora, "lora.yaml"),
             "recomputed": plan_for(tiny_project, extra + checkpointing, "recomputed.yaml")}
    for name, plan in plans.items():
        assert plan.value("hardware.strategy") == "fsdp" and plan.device.count == 2
        (tmp_path / f"{name}.json").write_text(plan.model_dump_json())
    worker = REPO / "tests" / "execute" / "fsdp_step.py"
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
         str(tmp_path), *(str(tmp_path / f"{name}.json") for name in plans)],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name, plan in plans.items():
        sharded, single = load_file(tmp_path / f"{name}.safetensors"), single_process_step(plan)
        assert sharded.keys() == single.keys() and len(single) > 1
        for key, expected in single.items():
            torch.testing.assert_close(sharded[key], expected, **STEP_TOLERANCE, msg=f"{name}: {key}")
        lora_b = [key for key in single if ".lora_B." in key]
        assert (name == "lora") == bool(lora_b) and all(single[key].abs().sum() > 0 for key in lora_b)


def start_run(spec: Path, root: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "runner", "run", str(spec), "--runs-dir", str(root), "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def after_first_checkpoint(process: subprocess.Popen, root: Path, signum: int) -> Path:
    deadline = time.monotonic() + 180
    while not finished_checkpoints(root / "runs" / "tiny"):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint before the deadline"
        time.sleep(0.05)
    os.killpg(process.pid, signum)  # the whole group, as the daemon and a terminal do
    process.wait(timeout=120)
    (run_dir,) = (root / "runs" / "tiny").iterdir()
    return run_dir


def losses(run: RunDirectory) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in map(json.loads, run.metrics.read_text().splitlines())}


@pytest.mark.slow
def test_a_run_stopped_on_two_processes_resumes_on_one(tiny_project, tmp_path):
    training = "training:\n  max_steps: 16\n  batch_size: 4\n  learning_rate: 1.0e-3\noutputs:\n  checkpoint_every: 2\n"
    spec = tiny_project(TINY_SPEC + training + TWO_PROCESSES)
    process = start_run(spec, tmp_path)
    run = RunDirectory(after_first_checkpoint(process, tmp_path, signal.SIGTERM))
    manifest = run.read_manifest()
    assert process.returncode == 130 and manifest.state == "interrupted"
    stopped = int(run.latest_checkpoint().name.rsplit("-", 1)[1])
    assert stopped < 16 and not list(run.checkpoints.glob("*.partial"))

    spec.write_text(TINY_SPEC + training)  # the same job on one process
    code, resumed = run_plan(make_plan(spec, run_root=tmp_path, machine=CPU), run_root=tmp_path, console=False)
    manifest = RunDirectory(resumed).read_manifest()
    assert code == 0 and resumed == run.path and manifest.metrics.steps == 16
    assert [(a.state, a.layout, a.resumed_from_step) for a in manifest.attempts] == [
        ("interrupted", "cpu x2, fsdp", 0), ("succeeded", "cpu x1, ddp", stopped)]

    alone = tmp_path / "alone"
    alone.mkdir()
    code, uninterrupted = run_plan(make_plan(spec, run_root=alone, machine=CPU), run_root=alone, console=False)
    assert code == 0
    expected, got = losses(RunDirectory(uninterrupted)), losses(run)
    assert got[stopped + 1] == pytest.approx(expected[stopped + 1], rel=1e-4)
    assert got[16] == pytest.approx(expected[16], rel=1e-3)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_saves_an_ordinary_model(tiny_project, tmp_path, capsys):
    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM

    spec = tiny_project(TINY_SPEC + "training:\n  max_steps: 12\n  batch_size: 4\n  learning_rate: 1.0e-3\n"
                        "outputs:\n  checkpoint_every: 2\n  keep_checkpoints_after_success: true\n"
                        "samples: [What is your name?]\n" + TWO_PROCESSES)
    process = start_run(spec, tmp_path)
    run = RunDirectory(after_first_checkpoint(process, tmp_path, signal.SIGKILL))
    assert run.read_manifest().state == "running"

    assert main(["run", str(spec), "--runs-dir", str(tmp_path), "--quiet"]) == 0
    manifest = Manifest.model_validate_json(run.manifest_file.read_text())
    assert [a.state for a in manifest.attempts] == ["killed", "succeeded"]
    assert manifest.attempts[1].resumed_from_step >= 2 and manifest.attempts[1].layout == "cpu x2, fsdp"
    assert set(manifest.parameters.changed) == set(manifest.plan.trainable.trained)
    assert manifest.parameters.unexpected == [] and manifest.samples[0].after is not None

    # The saved folder (gathered on rank 0) holds exactly the weights each process wrote of its shards
    # into the last checkpoint, read back here by one process.
    saved = AutoModelForCausalLM.from_pretrained(run.model, dtype=torch.float32).state_dict()
    last = run.checkpoints / "checkpoint-12" / checkpoints.TENSORS
    assert len(list(last.glob("*.safetensors"))) == 2
    written = {f"model.{name}": torch.empty_like(saved[name]) for name in manifest.plan.trainable.trained}
    dcp.load(written, storage_reader=dcp.HuggingFaceStorageReader(str(last)))
    for name, tensor in written.items():
        assert torch.equal(saved[name.removeprefix("model.")], tensor), name
    capsys.readouterr()
    assert main(["sample", str(run.path), "What is your name?"]) == 0
    assert capsys.readouterr().out.startswith("Q: What is your name?\nA: ")


@pytest.mark.slow
def test_lora_under_fsdp_trains_adapters_only_and_saves_them(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + "training:\n  max_steps: 3\n  batch_size: 4\n  learning_rate: 1.0e-2\n"
                        "trainable:\n  mode: lora\n  lora: {r: 4}\n" + TWO_PROCESSES)
    assert main(["run", str(spec), "--runs-dir", str(tmp_path), "--quiet"]) == 0
    (manifest_file,) = (tmp_path / "runs" / "tiny").glob("*/manifest.json")
    manifest = Manifest.model_validate_json(manifest_file.read_text())
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed == 28
    run = RunDirectory(manifest_file.parent)
    assert (run.adapter / "adapter_model.safetensors").is_file() and not run.model.exists()
    capsys.readouterr()
    assert main(["sample", str(run.path), "Chatty is"]) == 0
