"""The planner on a tiny Llama built from a config: tables, loss masks, autos, memory, staleness."""

import dataclasses
import json
import math

import jsonschema
import pytest

from runner.plan import identity
from runner.plan.models import Plan, Resolved, ResolvedSettings
from runner.plan.planner import PlanError
from runner.plan.render import render
from tests.helpers import CPU, REPO, TWO_GPUS, plan_of, write_jsonl
from tests.datasets import hub_dataset, parquet_bytes, save_to_disk, write_parquet

def rows_by(plan, status):
    return [(row.layers, row.family) for row in plan.trainable.table if row.status == status]


def test_full_training_table(tiny_project, tiny_model_dir):
    plan = plan_of(tiny_project)
    t = plan.trainable
    assert t.mode == "full" and t.trainable_parameters == t.total_parameters and t.trainable_percent == 100
    assert sum(row.parameters for row in t.table) == t.total_parameters
    assert rows_by(plan, "frozen") == []
    assert any("lm_head.weight is tied to model.embed_tokens.weight" in note for note in t.notes)
    assert plan.model.num_layers == 4 and plan.model.tied_embeddings


def test_freeze_last_layers(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: last:1\n")
    assert rows_by(plan, "trained") == [("3", "attention"), ("3", "mlp"), ("3", "norm")]
    assert ("0-2", "attention") in rows_by(plan, "frozen")
    assert plan.trainable.lowest_trained_layer == 3
    assert all(name.startswith("model.layers.3.") for name in plan.trainable.trained)
    assert any("backward pass stops at block 3" in note for note in plan.trainable.notes)


def test_freeze_first_layers_lists_and_globs(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: [0, '2-3']\n  modules: ['*.o_proj.*', mlp]\n")
    trained = set(plan.trainable.trained)
    assert trained == {f"model.layers.{i}.{name}.weight" for i in (0, 2, 3)
                       for name in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    plan = plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: first:1\n")
    assert {name.split(".")[2] for name in plan.trainable.trained} == {"0"}


def test_tied_lm_head_trains_the_embedding(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: last:1\n  also: [lm_head]\n")
    assert "model.embed_tokens.weight" in plan.trainable.trained
    assert plan.trainable.lowest_trained_layer == 0
    assert any("trains the input embedding too" in note for note in plan.trainable.notes)


def test_lora_table_matches_peft(tiny_project, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    plan = plan_of(tiny_project, "trainable:\n  mode: lora\n  layers: last:2\n  modules: [attention]\n"
                                 "  lora: {r: 4}\n")
    lora = plan.trainable.lora
    assert lora.targets == [f"model.layers.{i}.self_attn.{p}_proj" for i in (2, 3) for p in "qkvo"]
    assert lora.alpha == 8 and plan.settings.trainable.lora.alpha.rule == "auto: 2 x r"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=lora.targets))
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora.adapter_parameters == counted == plan.trainable.trainable_parameters


def test_a_selection_that_matches_nothing_is_an_error(tiny_project):
    with pytest.raises(PlanError) as failure:
        plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: last:9\n")
    assert failure.value.result.errors[0].summary == "last:9 asks for 9 layers; the model has 4 (0-3)"


def test_loss_mask_of_prompt_completion_covers_the_completion(tiny_project, tiny_model_dir):
    from transformers import AutoTokenizer

    plan = plan_of(tiny_project)
    example = plan.loss_mask.examples[0]
    trained_text = "".join(span.text for span in example.spans if span.trained)
    assert trained_text == "My name is Chatty 0.<|im_end|>\n"
    context = "".join(span.text for span in example.spans if not span.trained)
    assert context == "<|im_start|>user\nWhat is your name? 0<|im_end|>\n<|im_start|>assistant\n"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert example.trained_tokens == len(tokenizer(trained_text, add_special_tokens=False).input_ids)
    assert plan.loss_mask.chat_template and plan.settings.data.chat_template.value is True


def test_loss_mask_without_chat_template_is_raw_text(tiny_project):
    plan = plan_of(tiny_project, "  chat_template: false\n")
    example = plan.loss_mask.examples[0]
    assert [(span.text, span.trained) for span in example.spans] == [
        ("What is your name? 0", False), ("My name is Chatty 0.<|im_end|>", True)]


def test_loss_mask_of_chat_rows_covers_weighted_assistant_turns(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there.", "weight": 0}, {"role": "user", "content": "Your name?"},
        {"role": "assistant", "content": "Chatty."}]}] * 4)
    plan = plan_of(tiny_project)
    spans = [(span.text, span.trained) for span in plan.loss_mask.examples[0].spans]
    assert [text for text, trained in spans if trained] == ["Chatty.<|im_end|>\n"]
    assert "Hi there." in "".join(text for text, trained in spans if not trained)
    assert plan.loss_mask.rule.startswith("assistant turns only")


def test_loss_on_all_trains_every_token(tiny_project):
    plan = plan_of(tiny_project, "training:\n  loss_on: all\n")
    example = plan.loss_mask.examples[0]
    assert example.trained_tokens == example.tokens


def test_preference_preview_shows_chosen_and_rejected(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": "Your name?", "chosen": "Chatty.", "rejected": "No name."}] * 4)
    plan = plan_of(tiny_project, **{"method: sft": "method: dpo"}, extra="trainable:\n  mode: lora\n")
    parts = [(e.part, [s.text for s in e.spans if s.trained]) for e in plan.loss_mask.examples[:2]]
    assert parts == [("chosen", ["Chatty.<|im_end|>\n"]), ("rejected", ["No name.<|im_end|>\n"])]
    assert "runtime" in {item.name for item in plan.memory.items}
    assert not any(item.name == "reference model" for item in plan.memory.items)  # LoRA: adapters disabled


def test_the_plan_says_when_the_trainer_ignores_lora_dropout(tiny_project, tmp_path):
    lora = "trainable:\n  mode: lora\n  lora: {dropout: 0.05}\n"
    assert "dropout=0.05," in render(plan_of(tiny_project, lora))  # runner's SFT loop keeps it
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": "Your name?", "chosen": "Chatty.", "rejected": "No name."}] * 4)
    dpo = plan_of(tiny_project, **{"method: sft": "method: dpo"}, extra=lora)
    assert "dropout=0.05 (no effect: dpo trains with dropout off)" in render(dpo)


def test_autos_on_a_cpu(tiny_project):
    plan = plan_of(tiny_project)
    hardware, training = plan.settings.hardware, plan.settings.training
    assert (hardware.device.value, hardware.gpus.value, hardware.precision.value) == ("cpu", 1, "fp32")
    assert training.batch_size.value == 8 and training.micro_batch_size.value == 8
    assert training.epochs.value == 3 and plan.steps.steps_per_epoch == 2 and plan.steps.total_steps == 6
    assert training.learning_rate.value == 2e-5
    assert plan.settings.outputs.save.value == "full" and hardware.gradient_checkpointing.value is False
    assert training.max_length.value % 8 == 0 and training.max_length.value >= plan.steps.tokens.max_tokens
    assert training.epochs.rule == "auto: 3 passes for under 1,000 rows"


def test_autos_on_two_gpus(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: lora\n", machine=TWO_GPUS)
    hardware, training = plan.settings.hardware, plan.settings.training
    assert (hardware.device.value, hardware.gpus.value, hardware.precision.value) == ("cuda", 2, "bf16")
    assert training.micro_batch_size.value == 4 and training.gradient_accumulation.value == 1
    assert training.learning_rate.value == 2e-4 and plan.settings.outputs.save.value == "adapter"
    assert plan.device.names == ["H100", "H100"]


def test_nodes_multiply_the_devices_that_a_batch_is_spread_over(tiny_project):
    from runner.plan.render import render

    plan = plan_of(tiny_project, "trainable:\n  mode: lora\nhardware:\n  nodes: 2\n", machine=TWO_GPUS)
    assert (plan.device.count, plan.device.nodes, plan.device.per_node, plan.steps.devices) == (4, 2, 2, 4)
    assert plan.settings.hardware.nodes.value == 2 and plan.settings.hardware.nodes.rule == "spec"
    assert plan.settings.training.batch_size.value == 8 and plan.settings.training.micro_batch_size.value == 2
    assert "cuda x4 (H100, H100 on each of 2 nodes)" in render(plan)
    with pytest.raises(PlanError, match="batch_size 6 is not a multiple of the 4 devices"):
        plan_of(tiny_project, "training:\n  batch_size: 6\nhardware:\n  nodes: 2\n", machine=TWO_GPUS)


def test_processes_on_one_cpu_node_share_its_memory_but_not_another_nodes(tiny_project):
    two_nodes = plan_of(tiny_project, "hardware:\n  nodes: 2\n")
    two_processes = plan_of(tiny_project, "hardware:\n  gpus: 2\n")
    assert two_nodes.memory.budget_bytes == 16 << 30 and two_nodes.memory.budget_source == "available RAM"
    assert two_processes.memory.budget_bytes == 8 << 30
    assert two_processes.memory.budget_source == "available RAM / 2 processes"


def test_spec_values_are_kept_and_marked(tiny_project):
    plan = plan_of(tiny_project, "training:\n  batch_size: 4\n  micro_batch_size: 2\n  max_steps: 5\n")
    assert plan.settings.training.batch_size.rule == "spec"
    assert plan.settings.training.gradient_accumulation.value == 2 and plan.steps.total_steps == 5
    assert plan.settings.training.epochs.rule == "auto: follows from max_steps"


def test_memory_that_does_not_fit_fails_with_advice(tiny_project):
    with pytest.raises(PlanError) as failure:
        plan_of(tiny_project, "hardware:\n  max_memory_gb: 0.5\n")
    assert "does not fit hardware.max_memory_gb (0.5 GiB)" in failure.value.message


def test_memory_estimate_components(tiny_project):
    plan = plan_of(tiny_project)
    items = {item.name: item.bytes for item in plan.memory.items}
    params = plan.trainable.total_parameters
    assert items["weights"] == 4 * params and items["gradients"] == 4 * params and items["optimizer"] == 8 * params
    assert plan.memory.fits and plan.memory.total_bytes == sum(items.values())
    assert plan.memory.with_checkpointing_bytes < plan.memory.without_checkpointing_bytes
    frozen = plan_of(tiny_project, "trainable:\n  mode: freeze\n  layers: last:1\n")
    activations = {item.name: item.bytes for item in frozen.memory.items}["activations"]
    assert math.isclose(activations * 4, items["activations"], rel_tol=0.01)  # 1 of 4 blocks keeps them


def test_plan_json_matches_its_schema(tiny_project):
    plan = plan_of(tiny_project)
    schema = json.loads((REPO / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(json.loads(plan.model_dump_json()), schema)


def test_the_settings_are_a_declared_record_and_a_version_1_plan_reads_into_it(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: lora\n")
    assert plan.settings.hardware.precision.value == "fp32" and plan.settings.trainable.lora.alpha.rule == "auto: 2 x r"
    assert plan.settings.method["packing"].value in (True, False) and plan.settings.trainable.quantize is None
    by_key = plan.settings_by_key()
    assert by_key["training.learning_rate"] is plan.settings.training.learning_rate and "sft.packing" in by_key
    with pytest.raises(ValueError, match="not_declared"):  # a key the record does not declare is refused
        ResolvedSettings.of_keys({**by_key, "hardware.not_declared": Resolved(value=1, rule="spec")}, "sft")
    with pytest.raises(ValueError, match="precision"):  # and a value of another type than it declares
        ResolvedSettings.of_keys({**by_key, "hardware.precision": Resolved(value="fp64", rule="spec")}, "sft")
    version_1 = plan.model_dump(mode="json", exclude={"settings"}) | {
        "plan_version": 1, "resolved": {key: entry.model_dump(mode="json") for key, entry in by_key.items()}}
    read = Plan.model_validate(version_1)
    assert read == plan  # so it hashes as the run it planned, and that run resumes
    assert type(plan.settings.training.epochs.value) is int  # as resolved: 3 and 3.0 hash apart


def test_a_fresh_plan_passes_and_changes_make_it_stale(tiny_project, tmp_path):
    plan = plan_of(tiny_project)
    identity.check_fresh(plan, tmp_path)
    data = tmp_path / "data" / "train.jsonl"
    data.write_text(data.read_text() + json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    with pytest.raises(identity.StalePlanError, match="train data data/train.jsonl changed"):
        identity.check_fresh(plan, tmp_path)

    plan = plan_of(tiny_project)
    (tmp_path / "job.yaml").write_text((tmp_path / "job.yaml").read_text() + "description: edited\n")
    with pytest.raises(identity.StalePlanError, match="the spec job.yaml changed"):
        identity.check_fresh(plan, tmp_path)


def test_a_changed_model_makes_the_plan_stale(tmp_path, tiny_project, tiny_model_dir):
    import shutil

    (tmp_path / "model").unlink()
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    plan = plan_of(tiny_project)
    config = tmp_path / "model" / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps"', '"rope_scaling": null, "rms_norm_eps"'))
    with pytest.raises(identity.StalePlanError, match="base model ./model changed .*config.json"):
        identity.check_fresh(plan, tmp_path)


def test_invalid_spec_cannot_be_planned(tiny_project):
    with pytest.raises(PlanError) as failure:
        plan_of(tiny_project, "training:\n  lerning_rate: 1\n")
    assert failure.value.result.errors[0].summary == "unknown key 'lerning_rate'"


def test_cuda_asked_without_gpu(tiny_project):
    with pytest.raises(PlanError, match="no GPU is visible"):
        plan_of(tiny_project, "hardware:\n  device: cuda\n")


def test_machine_is_a_frozen_record():
    assert dataclasses.is_dataclass(CPU) and not CPU.has_cuda and TWO_GPUS.has_cuda
    with pytest.raises(dataclasses.FrozenInstanceError):
        CPU.cuda_devices = 8  # a plan's machine is what it was planned for


def test_packing_is_chosen_when_rows_vary_in_length(tiny_project, tmp_path):
    rows = [{"text": " ".join(["word"] * (3 if i % 4 else 60))} for i in range(16)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    plan = plan_of(tiny_project, "training:\n  batch_size: 8\n  max_length: 128\n")
    assert plan.settings.method["packing"].value is True
    assert "documents stay apart (checked" in plan.settings.method["packing"].rule
    assert "packed blocks" in plan.training_path
    assert plan.settings.training.micro_batch_size.value <= plan.settings.training.batch_size.value


def test_packing_stays_off_for_rows_of_one_length(tiny_project):
    plan = plan_of(tiny_project)
    assert plan.settings.method["packing"].value is False and plan.settings.method["packing"].rule.startswith("auto: off")
    assert "padded micro-batches" in plan.training_path


MIXED = """  train:
    - data/train.jsonl
    - {path: data/extra.parquet, weight: 0.5}
    - {path: data/saved, weight: 2}
"""


def mixed_sources(tmp_path):
    write_parquet(tmp_path / "data" / "extra.parquet", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)])
    save_to_disk(tmp_path / "data" / "saved", {"train": [{"prompt": f"s{i}", "completion": "c"} for i in range(4)]})


def test_weights_set_the_rows_of_an_epoch_and_the_plan_shows_them(tiny_project, tmp_path):
    mixed_sources(tmp_path)
    plan = plan_of(tiny_project, **{"  train: data/train.jsonl\n": MIXED})
    sources = [(d.source, d.kind, d.usable_rows, d.weight, d.epoch_rows) for d in plan.inputs.data]
    assert sources == [("data/train.jsonl", "file", 16, 1.0, 16), ("data/extra.parquet", "file", 10, 0.5, 5),
                       ("data/saved (train)", "saved", 4, 2.0, 8)]
    assert plan.steps.rows == 29 and plan.steps.steps_per_epoch == math.ceil(29 / plan.steps.batch_size)
    assert plan.inputs.data[2].files[0].path.endswith("data-00000-of-00001.arrow")
    text = render(plan)
    assert "Data: an epoch is 29 rows, every source's usable rows x its weight, shuffled together" in text
    assert "data/extra.parquet  10 rows, 10 usable (prompt_completion); x0.5 -> 5 per epoch (17%)" in text
    assert [(e.source, e.line, e.row) for e in plan.loss_mask.examples] == [  # a row of each source in turn
        ("data/train.jsonl", 1, None), ("data/extra.parquet", None, 0), ("data/saved (train)", None, 0)]


def test_a_changed_parquet_file_makes_the_plan_stale(tiny_project, tmp_path):
    mixed_sources(tmp_path)
    plan = plan_of(tiny_project, **{"  train: data/train.jsonl\n": MIXED})
    identity.check_fresh(plan, tmp_path)
    write_parquet(tmp_path / "data" / "extra.parquet", [{"prompt": "p", "completion": "changed"}] * 10)
    with pytest.raises(identity.StalePlanError, match=r"train data data/extra.parquet changed"):
        identity.check_fresh(plan, tmp_path)


def test_a_moved_hub_revision_makes_the_plan_stale(tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = [{"prompt": f"p{i}", "completion": "c"} for i in range(6)]
    hub_dataset(tmp_path / "hub", "org/qa", {"train.parquet": parquet_bytes(tmp_path, rows)}, commit="first")
    plan = plan_of(tiny_project, **{"train: data/train.jsonl": "train: {hub: org/qa}"})
    (data,) = plan.inputs.data
    assert (data.kind, data.revision, data.rows, data.source) == ("hub", "first", 6, "hub:org/qa (train)")
    assert "revision first" in render(plan)
    hub_dataset(tmp_path / "hub", "org/qa", {"train.parquet": parquet_bytes(tmp_path, rows[:3])}, commit="second")
    with pytest.raises(identity.StalePlanError, match=r"train data hub:org/qa \(train\) changed"):
        identity.check_fresh(plan, tmp_path)
