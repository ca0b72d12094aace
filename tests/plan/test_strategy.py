"""The planner decides how a job is spread: ddp, fsdp, checkpointing, offload, and how many
devices would be needed; an 8B-shaped Llama (config and tensor names, no weights) on described
machines."""

import json
import random

import pytest

from runner.cli import main
from runner.methods import registry
from runner.plan import memory
from runner.plan.machine import what_if
from runner.plan.planner import PlanError, make_plan
from runner.rundir import plan_sha256
from tests.helpers import TINY_SPEC, TWO_GPUS, plan_of, spec_writer, write_jsonl
from tests.shapes import SHAPES, make_shape_only

LLAMA_8B_SPEC = """
version: 1
name: llama-8b-full
method: sft
base_model: ./llama-8b
data:
  train: train.jsonl
training:
  epochs: 1
  batch_size: 64
  max_length: 2048
"""


@pytest.fixture(scope="module")
def llama_8b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-8b")
    make_shape_only(folder / "llama-8b", SHAPES["llama-8b"])
    words = "the name of this assistant is Chatty and it answers questions briefly with care".split()
    generator = random.Random(0)
    write_jsonl(folder / "train.jsonl", [
        {"prompt": " ".join(generator.choices(words, k=generator.randint(20, 300))),
         "completion": " ".join(generator.choices(words, k=generator.randint(50, 600)))} for _ in range(64)])
    return spec_writer(folder)


def test_8b_full_fine_tuning_shards_over_eight_80gb_gpus(llama_8b):
    spec = llama_8b(LLAMA_8B_SPEC)
    plan = make_plan(spec, run_root=spec.parent, machine=what_if("gpus=8,gpu_gb=80,ram_gb=1000"))
    assert plan.device.count == 8 and plan.device.what_if and plan.memory.fits
    assert plan.settings.hardware.strategy.value == "fsdp" and plan.settings.hardware.offload.value is False
    rule = plan.settings.hardware.strategy.rule
    assert rule.startswith("auto: fsdp: sharded over 8 device(s)") and "ddp needs" in rule
    items = {item.name: item.bytes for item in plan.memory.items}
    parameters = plan.model.total_parameters
    assert parameters > 8e9 and items["optimizer"] == -(-parameters * 8 // 8)
    assert items["all-gathered"] > 0 and plan.memory.total_bytes < 80e9


def test_8b_on_one_80gb_gpu_offloads_to_cpu_memory(llama_8b):
    spec = llama_8b(LLAMA_8B_SPEC)
    plan = make_plan(spec, run_root=spec.parent, machine=what_if("gpus=1,gpu_gb=80,ram_gb=256"))
    assert plan.settings.hardware.strategy.value == "fsdp" and plan.settings.hardware.offload.value is True
    rule = plan.settings.hardware.strategy.rule
    assert "the shards in CPU memory, 120 GiB a machine" in rule and "ddp + checkpointing needs" in rule
    assert {item.name for item in plan.memory.items if item.bytes} == {"all-gathered", "activations", "logits",
                                                                       "runtime"}


def test_8b_on_one_80gb_gpu_without_the_cpu_memory_says_how_many_gpus_would_do(llama_8b):
    spec = llama_8b(LLAMA_8B_SPEC)
    with pytest.raises(PlanError) as raised:
        make_plan(spec, run_root=spec.parent, machine=what_if("gpus=1,gpu_gb=80,ram_gb=64"))
    assert "fsdp + offload needs 120 GiB of CPU memory" in raised.value.message
    assert "2 devices of 74.5 GiB would fit it with hardware.strategy: fsdp (gpus: 2)" in raised.value.hint


def test_methods_that_do_not_shard_say_so(llama_8b, tiny_project, tmp_path):
    spec = llama_8b(LLAMA_8B_SPEC.replace("method: sft", "method: dpo").replace("train.jsonl", "pairs.jsonl"))
    write_jsonl(spec.parent / "pairs.jsonl", [{"prompt": "Name?", "chosen": "Chatty.", "rejected": "No."}] * 8)
    with pytest.raises(PlanError) as raised:
        make_plan(spec, run_root=spec.parent, machine=what_if("gpus=8,gpu_gb=80"))
    assert "dpo does not shard (TRL DPOTrainer would load a full copy" in raised.value.hint
    write_jsonl(tmp_path / "data" / "pairs.jsonl", [{"prompt": "Name?", "chosen": "Chatty.", "rejected": "No."}] * 8)
    with pytest.raises(PlanError, match="hardware.strategy: fsdp is not possible here: TRL DPOTrainer"):
        plan_of(tiny_project, "hardware:\n  strategy: fsdp\n", **{"method: sft": "method: dpo",
                                                                   "data/train.jsonl": "data/pairs.jsonl"})


def test_ddp_when_a_full_copy_fits_and_fsdp_on_request(tiny_project):
    plan = plan_of(tiny_project, machine=TWO_GPUS)
    assert plan.settings.hardware.strategy.value == "ddp" and plan.settings.hardware.offload.value is False
    assert plan.settings.hardware.strategy.rule == "auto: ddp: a full copy fits on each of the 2 devices"
    sharded = plan_of(tiny_project, "hardware:\n  strategy: fsdp\n", machine=TWO_GPUS)
    assert sharded.settings.hardware.strategy.value == "fsdp" and sharded.settings.hardware.strategy.rule == "spec"
    assert "all-gathered" in {item.name for item in sharded.memory.items}


def test_fp16_does_not_shard(tiny_project):
    fp16 = TWO_GPUS.__class__(**{**TWO_GPUS.__dict__, "cuda_bf16": False})
    with pytest.raises(PlanError, match="fp16 needs a gradient scaler"):
        plan_of(tiny_project, "hardware:\n  strategy: fsdp\n", machine=fp16)


def test_the_sharded_estimate_divides_the_states_and_adds_the_gathered_blocks():
    from runner.plan.models import ModelFacts

    facts = ModelFacts(architecture="LlamaForCausalLM", num_layers=32, hidden_size=4096, intermediate_size=14336,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_positions=None,
                       total_parameters=8_030_261_248, tied_embeddings=False)
    work = memory.Workload(mode="full", precision="bf16", device="cuda", micro_batch=1, seq_len=2048,
                           checkpointing=True, trainable_parameters=facts.total_parameters, lowest_trained_layer=0)
    assert memory.block_parameters(facts) == 218_112_000  # Llama 3 8B's decoder layer
    whole = {item.name: item.bytes for item in memory.step_items(facts, work, True)}
    for devices in (2, 8):
        sharded = {item.name: item.bytes for item in memory.step_items(
            facts, memory.Workload(**{**work.__dict__, "strategy": "fsdp", "devices": devices}), True)}
        for name in ("weights", "gradients", "optimizer"):
            assert sharded[name] == -(-whole[name] // devices)
        assert sharded["activations"] == whole["activations"]
        root = facts.total_parameters - 32 * 218_112_000
        assert sharded["all-gathered"] == (root + 2 * 218_112_000) * 2 + 218_112_000 * 4


def test_the_layout_is_not_part_of_a_runs_identity(tiny_project):
    two = plan_of(tiny_project, "hardware:\n  strategy: fsdp\n", machine=TWO_GPUS)
    one = plan_of(tiny_project, "hardware:\n  gpus: 1\n  gradient_checkpointing: true\n", machine=TWO_GPUS)
    assert (two.device.count, one.device.count) == (2, 1)
    assert plan_sha256(one) == plan_sha256(two)
    other = plan_of(tiny_project, "training:\n  learning_rate: 1.0e-3\n", machine=TWO_GPUS)
    assert plan_sha256(other) != plan_sha256(two)


def test_a_plan_made_when_every_spec_held_every_methods_section_is_the_same_run(tiny_project):
    """Plans made before each method had its own spec model hold every method's section in their spec, null but
    their own: such a plan and one made now are the same run, so a run interrupted before the upgrade resumes."""
    plan = plan_of(tiny_project)
    assert set(plan.spec) & set(registry.names()) <= {plan.method}
    before = plan.model_copy(update={"spec": {**dict.fromkeys(registry.names()), **plan.spec}})
    assert plan_sha256(before) == plan_sha256(plan)


def test_packing_micro_batches_and_priority_are_not_part_of_a_runs_identity(tiny_project):
    plain = plan_sha256(plan_of(tiny_project))
    for how in ("sft:\n  packing: true\n", "training:\n  micro_batch_size: 1\n", "priority: 5\n"):
        assert plan_sha256(plan_of(tiny_project, how)) == plain, how
    assert plan_sha256(plan_of(tiny_project, "training:\n  max_steps: 2\n")) != plain


def test_offload_needs_fsdp_on_gpus(project, capsys):
    spec = project(TINY_SPEC.replace("./model", "./tiny-model") + "hardware:\n  device: cpu\n  strategy: ddp\n"
                   "  offload: true\n")
    assert main(["validate", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "hardware.offload: offload moves fsdp's shards to CPU memory; ddp has none" in out
    assert "offload moves GPU memory to the CPU; this job runs on the CPU" in out


def test_what_if_machines_are_checked_and_their_plans_are_not_run(tiny_project, tmp_path, capsys):
    with pytest.raises(ValueError, match="needs gpu_gb"):
        what_if("gpus=8")
    with pytest.raises(ValueError, match="unknown key 'gpu'"):
        what_if("gpu=8,gpu_gb=80")
    spec = tiny_project(TINY_SPEC)
    assert main(["plan", str(spec), "--machine", "gpus=2.5,gpu_gb=80"]) == 2
    assert "expected a positive whole number" in capsys.readouterr().err
    out = tmp_path / "plan.json"
    assert main(["plan", str(spec), "--machine", "gpus=4,gpu_gb=24", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "cuda x4 (GPU with 24 GB (what-if)), bf16" in shown and "[what-if" in shown
    assert json.loads(out.read_text())["device"]["what_if"] is True
    assert main(["run", "--plan", str(out), "--runs-dir", str(tmp_path)]) == 2
    assert "was planned for a described machine (--machine)" in capsys.readouterr().err


def test_8b_qlora_fits_one_24gb_gpu_and_what_lora_and_full_training_need(llama_8b):
    """The plan docs/lora-and-memory.md shows: a 4-bit base stores the blocks' 7.0B linear weights in
    about 3.4 GiB."""
    machine = what_if("gpus=1,gpu_gb=24,ram_gb=64")
    spec = LLAMA_8B_SPEC.replace("batch_size: 64", "batch_size: 16")

    def plan(text):
        path = llama_8b(text)
        return make_plan(path, run_root=path.parent, machine=machine)

    qlora = plan(spec + "trainable:\n  mode: lora\n  quantize: 4\n")
    weights = {item.name: item.bytes for item in qlora.memory.items}["weights"]
    assert qlora.memory.fits and qlora.trainable.quantized.compute_dtype == "bf16"
    assert 3.3 * 2**30 < qlora.trainable.quantized.stored_bytes < 3.5 * 2**30 and weights < 6 * 2**30
    lora = plan(spec + "trainable:\n  mode: lora\n")
    assert lora.memory.fits and lora.settings.training.micro_batch_size.value < qlora.settings.training.micro_batch_size.value
    with pytest.raises(PlanError) as raised:
        plan(spec)
    assert "does not fit GPU memory" in raised.value.message and "9 devices of 22.3 GiB" in raised.value.hint
