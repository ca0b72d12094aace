"""End to end on a tiny Llama: every method, every trainable mode, and what the manifest proves."""

import json
import os
import signal
import subprocess
import sys

import jsonschema
import pytest

from runner.cli import main
from runner.execute.job import run_plan
from runner.manifest import Manifest
from runner.plan.planner import make_plan
from runner.rundir import RunDirectory
from tests.conftest import REPO, TINY_SPEC, finished_checkpoints, write_jsonl
from tests.datasets import hub_dataset, parquet_bytes, save_to_disk, write_arrow, write_csv, write_parquet
from tests.plan.test_planner import CPU

FAST = "training:\n  max_steps: 4\n  batch_size: 4\n  learning_rate: 1.0e-3\n"


def run_spec(write_spec, extra="", *, machine=CPU, **replacements):
    text = TINY_SPEC
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = write_spec(text + extra)
    plan = make_plan(path, run_root=path.parent, machine=machine)
    code, run_dir = run_plan(plan, run_root=path.parent, spec_text=path.read_text(), console=False)
    run = RunDirectory(run_dir)
    return code, run, run.read_manifest()


def layers_of(names):
    return {name.split(".")[2] for name in names if name.startswith("model.layers.")}


def test_sft_full_writes_a_complete_run(tiny_project):
    code, run, manifest = run_spec(tiny_project, FAST + "samples: [What is your name?]\n")
    assert code == 0 and manifest.state == "succeeded" and manifest.error is None
    schema = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(json.loads(run.manifest_file.read_text()), schema)
    assert set(manifest.parameters.changed) == set(manifest.plan.trainable.trained)
    assert manifest.parameters.unexpected == [] and manifest.metrics.steps == 4
    assert manifest.metrics.train_loss is not None and manifest.metrics.peak_memory_bytes > 0
    assert manifest.samples[0].prompt == "What is your name?" and manifest.samples[0].after is not None
    assert manifest.attempts[0].number == 1 and manifest.data[0].used_rows == 16
    for path in (run.spec, run.plan, run.events, run.metrics, run.loss_plot, run.model / "config.json",
                 run.model / "model.safetensors", run.model / "tokenizer.json", run.model / "README.md"):
        assert path.is_file(), path
    card = (run.model / "README.md").read_text()
    assert "base_model: ./model" in card and manifest.data[0].sha256[:16] in card and "| 0-3 | attention |" in card
    steps = [json.loads(line)["step"] for line in run.metrics.read_text().splitlines()]
    assert steps[:4] == [1, 2, 3, 4]
    events = [json.loads(line)["event"] for line in run.events.read_text().splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_finished" and "parameters_compared" in events
    artifacts = {artifact.path for artifact in manifest.artifacts}
    assert "model/model.safetensors" in artifacts and "loss.png" in artifacts


def test_sft_chat_rows_freeze_last_layer(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"messages": [
        {"role": "user", "content": f"Name {i}?"}, {"role": "assistant", "content": "Chatty."}]} for i in range(8)])
    code, _, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: freeze\n  layers: last:1\n")
    assert code == 0 and layers_of(manifest.parameters.changed) == {"3"}
    assert "model.embed_tokens.weight" not in manifest.parameters.changed


def test_sft_text_with_lora_keeps_the_base_and_saves_an_adapter(tiny_project, tmp_path, capsys):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"text": f"Chatty is an assistant number {i}."}
                                                     for i in range(8)])
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n  lora: {r: 4}\n")
    assert code == 0
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed == 28
    assert (run.adapter / "adapter_config.json").is_file() and not run.model.exists()
    assert main(["sample", str(run.path), "Chatty is"]) == 0
    assert capsys.readouterr().out.startswith("Q: Chatty is\nA: ")


def test_module_globs_train_exactly_the_matches(tiny_project):
    code, _, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: freeze\n  modules: ['*.down_proj.*']\n")
    assert code == 0
    assert manifest.parameters.changed == [f"model.layers.{i}.mlp.down_proj.weight" for i in range(4)]


def test_merged_lora_saves_a_full_model(tiny_project):
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\noutputs:\n  save: merged\n")
    assert code == 0 and (run.model / "model.safetensors").is_file() and not run.adapter.exists()


def test_dpo_with_lora(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "I have no name."} for i in range(8)])
    code, _, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n", **{"method: sft": "method: dpo"})
    assert code == 0 and manifest.parameters.changed == []
    assert "rewards/accuracies" in manifest.metrics.method and "rewards/margins" in manifest.metrics.method


def test_reward_model_trains_its_head(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [
        {"input": {"messages": [{"role": "user", "content": f"Name {i}?"}]},
         "preferred_output": [{"role": "assistant", "content": "Chatty."}],
         "non_preferred_output": [{"role": "assistant", "content": "No name."}]} for i in range(8)])
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: freeze\n  layers: last:1\n",
                                   **{"method: sft": "method: reward"})
    assert code == 0 and "score.weight" in manifest.parameters.changed
    assert layers_of(manifest.parameters.changed) == {"3"} and manifest.samples == []


def test_rejected_rows_are_listed_and_bounded(tiny_project, tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(8)] + ["{not json", {"prompt": "x"}]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    code, run, manifest = run_spec(tiny_project, FAST, **{
        "train: data/train.jsonl": "train: data/train.jsonl\n  format: prompt_completion\n  max_rejected: 0.25"})
    assert code == 0
    rejected = [json.loads(line) for line in run.rejected.read_text().splitlines()]
    assert [row["line"] for row in rejected] == [9, 10]
    assert "not valid JSON" in rejected[0]["reason"] and rejected[1]["reason"].startswith("missing \"completion\"")
    assert manifest.data[0].rejected_rows == 2 and manifest.data[0].used_rows == 8


def test_every_kind_of_source_mixed_by_weight_trains_what_was_planned(tiny_project, tmp_path, monkeypatch):
    """One run over a JSONL file, a parquet file (with a bad row), a CSV file with mapped columns, an
    arrow IPC file, a save_to_disk folder and a hub dataset from the local cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    pairs = [{"prompt": f"Who are you {i}?", "completion": f"Chatty {i}."} for i in range(6)]
    write_parquet(tmp_path / "data" / "pairs.parquet", pairs + [{"prompt": "no answer", "completion": None}])
    write_csv(tmp_path / "data" / "qa.csv", [{"question": p["prompt"], "answer": p["completion"]} for p in pairs])
    write_arrow(tmp_path / "data" / "pairs.arrow", pairs[:4], stream=False)
    save_to_disk(tmp_path / "data" / "saved", {"train": pairs[:3], "test": pairs[3:]})
    hub_dataset(tmp_path / "hub", "someorg/pairs", {"data/train-00000-of-00001.parquet": parquet_bytes(tmp_path, pairs)})
    sources = ("  train:\n    - data/train.jsonl\n    - {path: data/pairs.parquet, weight: 0.5}\n"
               "    - {path: data/qa.csv, columns: {prompt: question, completion: answer}}\n"
               "    - {path: data/pairs.arrow, weight: 2}\n    - data/saved\n    - {hub: someorg/pairs, weight: 1.5}\n"
               "  eval: {path: data/saved, split: test}\n  max_rejected: 0.1\n")
    code, run, manifest = run_spec(tiny_project, FAST, **{"  train: data/train.jsonl\n": sources})
    assert code == 0, manifest.error
    planned = [(d.source, d.epoch_rows) for d in manifest.plan.inputs.data if d.role == "train"]
    assert planned == [("data/train.jsonl", 16), ("data/pairs.parquet", 3), ("data/qa.csv", 6), ("data/pairs.arrow", 8),
                       ("data/saved (train)", 3), ("hub:someorg/pairs (train)", 9)]
    trained = [(d.source, d.used_rows) for d in manifest.data if d.role == "train"]
    assert trained == planned  # the run took exactly the rows the plan counted
    assert [(d.kind, d.revision) for d in manifest.data][-2:] == [("hub", "abc123"), ("saved", None)]
    assert manifest.data[1].rejected_rows == 1 and manifest.data[-1].role == "eval" and manifest.data[-1].used_rows == 3
    (rejected,) = [json.loads(line) for line in run.rejected.read_text().splitlines()]
    assert rejected["file"].endswith("pairs.parquet") and rejected["row"] == 6 and "not null" in rejected["reason"]
    ready = next(json.loads(line) for line in run.events.read_text().splitlines() if '"data_ready"' in line)
    assert ready["train"] == 45 and ready["eval"] == 3
    assert "datasets: [someorg/pairs]" in (run.model / "README.md").read_text()


def test_too_many_rejected_rows_fail_the_run_with_a_manifest(tiny_project, tmp_path, monkeypatch):
    from runner.spec import check

    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "q", "completion": "a"}] * 4 + ["{bad"] * 2)
    monkeypatch.setattr(check, "_report_bad_rows", lambda *args: None)  # let the planner through
    code, _, manifest = run_spec(tiny_project, FAST)
    assert code == 1 and manifest.state == "failed" and manifest.error.kind == "data"
    assert "2 of 6 train rows cannot be used" in manifest.error.message


def test_a_frozen_parameter_that_changes_fails_the_run(tiny_project, monkeypatch):
    import torch

    from runner.methods import sft

    original = sft.train

    def tampering(ctx):
        result = original(ctx)
        with torch.no_grad():
            result.model.model.layers[0].mlp.up_proj.weight.add_(1.0)
        return result

    monkeypatch.setattr(sft, "train", tampering)
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: freeze\n  layers: last:1\n")
    assert code == 1 and manifest.error.kind == "integrity"
    assert manifest.parameters.unexpected == ["model.layers.0.mlp.up_proj.weight"]
    assert not run.model.exists()


def sigterm_at_sft_step(monkeypatch, step: int):
    """SIGTERM to this process as the SFT loop starts `step`; returns the undo."""
    from runner.methods import sft

    original, calls = sft.step_micro_batches, []

    def signalling(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(sft, "step_micro_batches", signalling)
    return lambda: monkeypatch.setattr(sft, "step_micro_batches", original)


def test_sigterm_checkpoints_and_the_same_plan_resumes(tiny_project, monkeypatch):
    undo = sigterm_at_sft_step(monkeypatch, 3)
    extra = "training:\n  max_steps: 6\n  batch_size: 4\n  learning_rate: 1.0e-3\noutputs:\n  checkpoint_every: 2\n"
    code, run, manifest = run_spec(tiny_project, extra)
    assert code == 130 and manifest.state == "interrupted" and manifest.error.kind == "interrupted"
    assert run.latest_checkpoint().name == "checkpoint-3"

    undo()
    code, resumed, manifest = run_spec(tiny_project, extra)
    assert code == 0 and resumed.path == run.path
    assert [(a.number, a.state, a.resumed_from_step) for a in manifest.attempts] == [
        (1, "interrupted", 0), (2, "succeeded", 3)]
    steps = [json.loads(line)["step"] for line in run.metrics.read_text().splitlines() if "loss" in line]
    assert steps[-1] == 6 and 4 in steps


def test_run_refuses_a_stale_plan(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + FAST)
    out = tmp_path / "plan.json"
    assert main(["plan", str(spec), "--out", str(out)]) == 0
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "new", "completion": "row"}\n' * 8)
    capsys.readouterr()
    assert main(["run", "--plan", str(out), "--runs-dir", str(tmp_path)]) == 1
    assert "saved plan is stale: train data data/train.jsonl changed" in capsys.readouterr().err


def test_run_a_saved_plan(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + FAST)
    out = tmp_path / "plan.json"
    assert main(["plan", str(spec), "--out", str(out)]) == 0
    assert main(["run", "--plan", str(out), "--runs-dir", str(tmp_path)]) == 0
    assert "tiny: SUCCEEDED" in capsys.readouterr().err  # stdout is not a terminal: it carries JSON lines


def test_two_processes_train_data_parallel_on_the_cpu(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC + "training:\n  max_steps: 3\n  batch_size: 8\n  learning_rate: 1.0e-3\n"
                        "trainable:\n  mode: freeze\n  layers: last:1\nhardware:\n  device: cpu\n  gpus: 2\n")
    assert main(["run", str(spec), "--runs-dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().err.count("tiny: SUCCEEDED") == 1  # the launching process reports, once
    (manifest_file,) = (tmp_path / "runs" / "tiny").glob("*/manifest.json")
    manifest = Manifest.model_validate_json(manifest_file.read_text())
    assert manifest.plan.device.count == 2 and manifest.metrics.steps == 3
    assert layers_of(manifest.parameters.changed) == {"3"}
    assert (manifest_file.parent / "events-rank1.jsonl").is_file()


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_project, tmp_path):
    import subprocess
    import sys
    import time

    spec = tiny_project(TINY_SPEC + "training:\n  max_steps: 200\n  batch_size: 4\n  learning_rate: 1.0e-3\n"
                        "outputs:\n  checkpoint_every: 50\n")
    command = [sys.executable, "-m", "runner", "run", str(spec), "--runs-dir", str(tmp_path), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not finished_checkpoints(tmp_path / "runs" / "tiny"):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint before the deadline"
        time.sleep(0.05)
    process.kill()
    process.wait()
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert RunDirectory(run_dir).read_manifest().state == "running"

    plan = make_plan(spec, run_root=tmp_path, machine=CPU)  # the same spec makes the same plan
    code, resumed = run_plan(plan, run_root=tmp_path, spec_text=spec.read_text(), console=False)
    manifest = RunDirectory(resumed).read_manifest()
    assert code == 0 and resumed == run_dir
    assert [a.state for a in manifest.attempts] == ["killed", "succeeded"]
    assert manifest.attempts[1].resumed_from_step >= 50 and manifest.metrics.steps == 200


def test_out_of_memory_fails_with_a_hint(tiny_project, monkeypatch):
    import torch

    from runner.methods import sft

    def exhausted(ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sft, "train", exhausted)
    code, run, manifest = run_spec(tiny_project, FAST)
    assert code == 1 and manifest.state == "failed" and manifest.error.kind == "oom"
    assert "micro_batch_size" in manifest.error.hint and "Tried to allocate" in manifest.error.message
    assert manifest.attempts[-1].state == "failed" and manifest.finished_at is not None


@pytest.mark.slow
def test_an_adapter_of_a_hub_model_names_the_hub_id_and_loads_elsewhere(tiny_project, tmp_path, tiny_model_dir,
                                                                        monkeypatch, capsys):
    import shutil

    from tests.spec.test_lockfile import hub_cache

    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "training-box", tiny_model_dir)))
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n",
                                   **{"base_model: ./model": "base_model: someorg/some-model"})
    assert code == 0, manifest.error
    config = json.loads((run.adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "someorg/some-model"
    assert "base_model: someorg/some-model\n" in (run.adapter / "README.md").read_text()
    assert manifest.weights.format == "safetensors" and manifest.weights.path.endswith("snapshots/abc123")
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: path.stat().st_mode & 0o777 for path in run.adapter.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # not transformers' 0600

    # another machine: the model is in its own cache, the training box's path is gone
    shutil.move(tmp_path / "training-box", tmp_path / "other-box")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other-box"))
    plain_peft = ("from peft import AutoPeftModelForCausalLM\n"
                  f"print(AutoPeftModelForCausalLM.from_pretrained({str(run.adapter)!r}).peft_config['default'].r)")
    loaded = subprocess.run([sys.executable, "-c", plain_peft], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # the hub library reads both at import
    assert loaded.stdout.strip() == "16", loaded.stderr[-2000:]
    capsys.readouterr()
    assert main(["sample", "tiny", "Chatty is", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("Q: Chatty is\nA: ")


def test_a_failing_worker_records_its_error_for_node_0(tiny_project, tmp_path, monkeypatch):
    from runner.execute.job import _start
    from runner.launch.local import Placement
    from runner.launch.records import Reports

    spec = tiny_project(TINY_SPEC + FAST + "hardware:\n  device: cpu\n  gpus: 2\n")
    plan = make_plan(spec, run_root=tmp_path, machine=CPU)
    run, _ = _start(plan, tmp_path, spec.read_text(), Placement())  # what node 0's launcher does first
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": 1}] * 16)  # this worker reads unusable rows
    worker = {"RUNNER_RUN_DIR": str(run.path), "RANK": "1", "WORLD_SIZE": "2", "RUNNER_NODE_RANK": "1"}
    for key, value in worker.items():
        monkeypatch.setenv(key, value)
    code, _ = run_plan(plan, run_root=tmp_path, console=False)
    assert code == 1
    (failure,) = Reports(run.path, 1).failures()
    assert (failure.rank, failure.node, failure.kind, failure.secondary) == (1, 1, "data", False)
    assert "rows" in failure.message and failure.hint
    assert run.read_manifest().state == "running"  # rank 0 writes the manifest; node 0's launcher settles it
def test_a_learning_rate_that_diverges_fails_the_run(tiny_project):
    code, run, manifest = run_spec(tiny_project, FAST.replace("1.0e-3", "1.0e+30"))
    assert code == 1 and manifest.state == "failed" and manifest.error.kind == "diverged"
    assert "loss is nan" in manifest.error.message or "loss is inf" in manifest.error.message
    assert not run.model.exists() and not run.adapter.exists()
