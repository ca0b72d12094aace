"""runner.lock: model facts for checks without the model, read by validate, reported when stale."""

import json
import shutil

import pytest

from runner.cli import main
from runner.spec import lockfile
from runner.spec.check import check_spec
from runner.spec.modelinfo import local_directory
from tests.helpers import BASE_SPEC, hub_cache, llama_shapes, write_safetensors_header

HUB_SPEC = BASE_SPEC.replace("./tiny-model", "someorg/some-model")


def test_per_layer_repetition_is_one_line_and_expands_back():
    shapes = llama_shapes(layers=30)
    shapes["model.layers.7.mlp.up_proj.weight"] = (99, 8)  # one odd layer splits the run
    compressed = lockfile.compress(shapes)
    assert compressed["model.layers.{0-29}.input_layernorm.weight"] == [8]
    assert compressed["model.layers.{7}.mlp.up_proj.weight"] == [99, 8]
    assert "model.layers.{0-6}.mlp.up_proj.weight" in compressed and "model.layers.{8-29}.mlp.up_proj.weight" in compressed
    assert len(compressed) == 2 + 9 + 2
    assert lockfile.expand(compressed) == shapes


def test_lock_writes_a_small_deterministic_file(project, tmp_path, monkeypatch, model_dir, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "cache", model_dir)))
    project(HUB_SPEC)
    project(HUB_SPEC.replace("name: tiny", "name: other"), name="other.yaml")  # one entry for both
    assert main(["lock", str(tmp_path)]) == 0
    text = (tmp_path / "runner.lock").read_text()
    record = json.loads(text)
    assert record["lock_version"] == 1 and list(record["models"]) == ["someorg/some-model"]
    model = record["models"]["someorg/some-model"]
    assert model["source"] == {"hub": "someorg/some-model", "revision": "abc123"}
    assert model["num_layers"] == 4 and model["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert '"model.layers.{0-3}.self_attn.q_proj.weight": [8, 8]' in text
    assert main(["lock", str(tmp_path)]) == 0 and "up to date" in capsys.readouterr().out
    assert (tmp_path / "runner.lock").read_text() == text
    assert main(["lock", "--check", str(tmp_path)]) == 0


def test_validate_checks_a_hub_model_against_the_lock_when_it_is_not_here(project, tmp_path, monkeypatch, model_dir):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "cache", model_dir)))
    spec = project(HUB_SPEC + "trainable:\n  mode: freeze\n  layers: last:40\n")
    main(["lock", str(spec)])
    on_the_box = check_spec(spec)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))  # the hook's machine: no model
    in_the_hook = check_spec(spec)
    assert [d.summary for d in in_the_hook.errors] == [d.summary for d in on_the_box.errors]
    assert in_the_hook.errors[0].summary == "last:40 asks for 40 layers; the model has 4 (0-3)"
    (spec.parent / "runner.lock").unlink()
    assert check_spec(spec).errors == []  # without the lock it can only warn


def test_a_stale_lock_is_reported_when_the_model_is_here(project, tmp_path, monkeypatch, model_dir):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "cache", model_dir)))
    spec = project(HUB_SPEC)
    main(["lock", str(spec)])
    assert check_spec(spec).diagnostics == []
    write_safetensors_header(model_dir / "model.safetensors", llama_shapes(layers=6))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "newer", model_dir, commit="def456")))
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 6}))
    shutil.rmtree(tmp_path / "newer" / "models--someorg--some-model" / "snapshots" / "def456")
    shutil.copytree(model_dir, tmp_path / "newer" / "models--someorg--some-model" / "snapshots" / "def456")
    result = check_spec(spec)
    summaries = [d.summary for d in result.warnings]
    assert result.errors == [] and len(summaries) == 2, summaries
    assert "written from revision abc123; this machine has def456" in summaries[0]
    assert "it says 4 layers; the model here has 6" in summaries[1]
    assert result.warnings[0].hint.startswith("refresh it: runner lock ")
    assert main(["lock", "--check", str(spec)]) == 1
    assert main(["lock", str(spec)]) == 0 and check_spec(spec).warnings == []


def test_a_local_model_missing_here_is_checked_against_the_lock(project, tmp_path, model_dir):
    spec = project(BASE_SPEC + "trainable:\n  mode: freeze\n  layers: [9]\n")
    main(["lock", str(spec)])
    shutil.rmtree(model_dir)
    result = check_spec(spec)
    assert [d.summary for d in result.warnings] == ["./tiny-model is not on this machine; checked against runner.lock"]
    assert "layer 9 does not exist" in result.errors[0].summary


def test_a_lock_from_a_newer_runner_or_broken_is_an_error(project, tmp_path):
    spec = project(BASE_SPEC)
    (tmp_path / "runner.lock").write_text(json.dumps({"lock_version": 2, "models": {}}))
    (error,) = check_spec(spec).errors
    assert "lock_version 2; this runner reads version 1" in error.summary and error.hint.startswith("write it again")
    with pytest.raises(lockfile.LockfileError, match="broken entry"):
        (tmp_path / "runner.lock").write_text(json.dumps({"lock_version": 1, "models": {"x": {"source": {}}}}))
        lockfile.read_lock(tmp_path)


def test_a_model_that_is_nowhere_cannot_be_locked(project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main(["lock", str(project(HUB_SPEC))]) == 1
    assert "someorg/some-model is not on this machine" in capsys.readouterr().out
    assert not (tmp_path / "runner.lock").exists()


def test_facts_read_from_the_lock_equal_the_model_s(model_dir, project, tmp_path):
    main(["lock", str(project(BASE_SPEC))])
    locked = lockfile.read_lock(tmp_path)["./tiny-model"].facts
    here = local_directory(model_dir)
    assert (locked.shapes, locked.tied, locked.num_layers) == (here.shapes, here.tied, here.num_layers)
