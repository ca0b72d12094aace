"""KTO on the tiny Llama: unpaired rows, their preview, the micro-batch minimum, and a run."""

import json
import shutil

from runner.spec.check import check_spec
from tests.helpers import FAST, plan_of, run_spec, write_jsonl

ROWS = [row for i in range(8) for row in ({"prompt": f"Name {i}?", "completion": "Chatty.", "label": True},
                                          {"prompt": f"Name {i}?", "completion": "I have no name.", "label": False})]


def test_the_plan_previews_desirable_and_undesirable_answers(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ROWS)
    plan = plan_of(tiny_project, "training:\n  batch_size: 4\n", **{"method: sft": "method: kto"})
    assert plan.objective.startswith("KTO:") and plan.training_path == "TRL KTOTrainer"
    examples = plan.loss_mask.examples
    assert [e.part for e in examples] == ["desirable", "undesirable", "desirable"]
    trained = [[span.text for span in e.spans if span.trained] for e in examples[:2]]
    assert trained == [["Chatty.<|im_end|>\n"], ["I have no name.<|im_end|>\n"]]
    assert plan.settings.training.micro_batch_size.value >= 2
    assert "reference model" in {item.name for item in plan.memory.items}  # full training: a frozen copy


def test_a_micro_batch_of_one_row_is_refused(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ROWS)
    spec = tiny_project("version: 1\nname: tiny\nmethod: kto\nbase_model: ./model\ndata:\n  train: data/train.jsonl\n"
                        "training:\n  batch_size: 4\n  micro_batch_size: 1\n")
    errors = [(d.path, d.summary) for d in check_spec(spec).errors]
    assert errors == [("training.micro_batch_size", "method kto needs micro-batches of at least 2 rows")]


def test_pairs_are_not_kto_rows(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    errors = [d.summary for d in check_spec(tiny_project("version: 1\nname: tiny\nmethod: kto\nbase_model: ./model\n"
                                                         "data:\n  train: data/train.jsonl\n")).errors]
    assert any("holds preference rows; method kto takes unpaired" in message for message in errors), errors


def test_kto_with_lora_trains_the_adapter(tiny_project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ROWS)
    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n", **{"method: sft": "method: kto"})
    assert code == 0, manifest.error
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed > 0
    assert "rewards/chosen" in manifest.metrics.method and "rewards/rejected" in manifest.metrics.method
    logged = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert all("kl" in r for r in logged if "loss" in r)


def test_full_kto_on_a_model_whose_config_names_no_architecture(tiny_project, tmp_path):
    """A GGUF's converted config names no architecture (the offline SmolLM2 copy). Left to build the
    reference itself, TRL reloads the base from the config's path and fails on it; the reference is a
    frozen copy of the model as loaded."""
    shutil.copytree(tmp_path / "model", tmp_path / "bare")
    config = json.loads((tmp_path / "bare" / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "bare" / "config.json").write_text(json.dumps(config))
    write_jsonl(tmp_path / "data" / "train.jsonl", ROWS)
    code, _, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: full\n",
                                 **{"method: sft": "method: kto", "base_model: ./model": "base_model: ./bare"})
    assert code == 0, manifest.error
    assert set(manifest.parameters.changed) == set(manifest.plan.trainable.trained)
    assert "rewards/chosen" in manifest.metrics.method
