"""check_spec end to end: every diagnostic kind, with its field path, line and column."""

import dataclasses

from runner.spec.check import check_spec
from tests.helpers import BASE_SPEC, write_jsonl


def diagnostics_of(path):
    return [(d.severity, d.path, d.span.line if d.span else None, d.span.column if d.span else None, d.summary,
             d.hint) for d in check_spec(path).diagnostics]


def find(path, field):
    found = [d for d in check_spec(path).diagnostics if d.path == field]
    assert found, f"no diagnostic for {field}: {diagnostics_of(path)}"
    return found[0]


def test_a_valid_spec_has_no_diagnostics(project):
    result = check_spec(project(BASE_SPEC))
    assert result.diagnostics == []
    assert result.spec.name == "tiny" and result.spec.trainable.mode == "full"
    assert result.data["train"].format == "prompt_completion" and result.data["train"].rows == 8


def test_unknown_key_points_at_the_key_and_suggests(project):
    error = find(project(BASE_SPEC + "training:\n  lerning_rate: 1e-4\n"), "training.lerning_rate")
    assert (error.span.line, error.span.column) == (8, 3)
    assert error.summary == "unknown key 'lerning_rate'" and error.hint == "did you mean 'learning_rate'?"


def test_unknown_key_without_a_close_match_lists_the_keys(project):
    error = find(project(BASE_SPEC + "hardware:\n  colour: blue\n"), "hardware.colour")
    assert "keys allowed here" in error.hint and "precision" in error.hint


def test_bad_enum_value_suggests_the_closest(project):
    error = find(project(BASE_SPEC.replace("method: sft", "method: dop")), "method")
    assert (error.span.line, error.span.column) == (3, 9)
    assert error.hint == "did you mean 'dpo'?"


def test_missing_required_key(project):
    error = find(project(BASE_SPEC.replace("name: tiny\n", "")), "name")
    assert error.summary == "missing required key 'name'"
    assert error.hint == "Lowercase letters, digits and '-'; names the run directory and lets other specs refer to this one."
    assert error.span.line == 1


def test_type_and_range_errors(project):
    path = project(BASE_SPEC + "training:\n  batch_size: many\n  seed: -3\ntrainable:\n  mode: lora\n"
                   "  lora: {r: 0}\n")
    assert find(path, "training.batch_size").summary == "expected a whole number >= 1 or 'auto', got 'many'"
    assert find(path, "training.seed").span.line == 9
    error = find(path, "trainable.lora.r")
    assert (error.span.line, error.span.column) == (12, 13) and "greater than or equal to 1" in error.summary


def test_all_problems_in_one_run(project):
    path = project(BASE_SPEC.replace("method: sft", "method: sfft")
                   + "training:\n  epochs: fast\nhardware:\n  precision: fp8\noutputs:\n  dir: /etc\n")
    fields = {d.path for d in check_spec(path).diagnostics}
    assert {"method", "training.epochs", "hardware.precision", "outputs.dir"} <= fields


def test_layer_selection_is_checked_against_the_model(project):
    error = find(project(BASE_SPEC + "trainable:\n  mode: freeze\n  layers: last:40\n"), "trainable.layers")
    assert error.summary == "last:40 asks for 40 layers; the model has 4 (0-3)"
    assert error.span.line == 9


def test_a_glob_that_matches_nothing_lists_what_exists(project):
    error = find(project(BASE_SPEC + "trainable:\n  mode: freeze\n  also: [norm, '*.q_prj.*']\n"),
                 "trainable.also[1]")
    assert error.summary == "'*.q_prj.*' matches no parameter"
    assert "model.layers.N.self_attn.q_proj.weight" in error.hint
    assert error.span.column == 16


def test_unknown_module_family_suggests(project):
    error = find(project(BASE_SPEC + "trainable:\n  mode: freeze\n  modules: [atention]\n"), "trainable.modules")
    assert "did you mean 'attention'" in error.summary


def test_tied_lm_head_is_a_warning_with_the_size(project):
    result = check_spec(project(BASE_SPEC + "trainable:\n  mode: freeze\n  layers: last:1\n  also: [lm_head]\n"))
    assert result.spec is not None
    (warning,) = result.warnings
    assert "tied to model.embed_tokens.weight" in warning.summary


def test_cross_field_rules(project):
    path = project(BASE_SPEC + "trainable:\n  layers: last:2\n  lora: {r: 8}\noutputs:\n  save: adapter\n"
                   "dpo:\n  beta: 0.2\ntraining:\n  batch_size: 6\n  micro_batch_size: 4\n")
    assert "mode: full trains every parameter" in find(path, "trainable.layers").summary
    assert find(path, "trainable.lora").summary == "LoRA settings given, but mode is full"
    assert find(path, "outputs.save").summary == "save: adapter needs trainable.mode: lora"
    assert "applies to method dpo" in find(path, "dpo").summary
    batch = find(path, "training.batch_size")
    assert "not a multiple of micro_batch_size 4" in batch.summary and batch.hint == "use a batch_size of 8"


def test_another_methods_section_is_said_once_whatever_it_holds(project):
    """A spec validates against its own method's model: a section of another method is not checked field by
    field there (that model does not know it), and the rule names whose section it is, once."""
    path = project(BASE_SPEC + "grpo:\n  reward: {no_such_check: 1}\n  bogus: true\n")
    (only,) = [d for d in check_spec(path).diagnostics if d.path.startswith("grpo")]
    assert only.summary == "a 'grpo' section applies to method grpo; this spec's method is sft"
    assert only.hint == "remove the 'grpo' section, or set method: grpo"


def test_with_a_misspelt_method_every_section_is_still_checked(project):
    path = project(BASE_SPEC.replace("method: sft", "method: grpoo") + "grpo:\n  bogus: true\n")
    assert find(path, "method").hint == "did you mean 'grpo'?"
    assert find(path, "grpo.bogus").summary == "unknown key 'bogus'"


def test_batch_arithmetic_counts_the_devices_of_every_node(project):
    path = project(BASE_SPEC + "training:\n  batch_size: 8\n  micro_batch_size: 2\nhardware:\n  gpus: 2\n  nodes: 3\n")
    batch = find(path, "training.batch_size")
    assert batch.summary == "batch_size 8 is not a multiple of micro_batch_size 2 x 6 device(s)"
    assert batch.hint == "use a batch_size of 12"


def test_rl_methods_need_a_reward_source(project):
    error = find(project(BASE_SPEC.replace("method: sft", "method: ppo")), "method")
    assert "needs a 'ppo' section with 'reward'" in error.summary


def test_reward_source_needs_exactly_one_kind(project):
    spec = BASE_SPEC.replace("method: sft", "method: grpo") + "grpo:\n  reward: {function: not a function}\n"
    assert "is not 'module:function'" in find(project(spec), "grpo.reward.function").summary


def test_preference_data_is_required_for_dpo(project, tmp_path):
    error = find(project(BASE_SPEC.replace("method: sft", "method: dpo")), "data.train")
    assert "method dpo takes preference" in error.summary


def test_bad_rows_are_reported_at_their_line_in_the_data_file(project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": "a", "completion": "b"}, "{broken", {"prompt": "c", "completion": 4}, {"x": 1}]
                + [{"prompt": "d", "completion": "e"}] * 6)
    result = check_spec(project(BASE_SPEC))
    rows = [(d.file.rsplit("/", 1)[-1], d.span.line, d.summary) for d in result.errors if d.file.endswith("jsonl")]
    assert [(name, line) for name, line, _ in rows] == [("train.jsonl", 2), ("train.jsonl", 3), ("train.jsonl", 4)]
    assert "not valid JSON" in rows[0][2] and '"completion" must be a string' in rows[1][2]
    summary = find(project(BASE_SPEC), "data.train")
    assert summary.summary == "3 of 10 rows in data/train.jsonl cannot be used"


def test_tolerated_bad_rows_are_warnings(project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", ["{broken"] + [{"prompt": "d", "completion": "e"}] * 19)
    result = check_spec(project(BASE_SPEC + "  max_rejected: 0.1\n"))
    assert result.spec is not None and len(result.warnings) == 2


def test_missing_data_and_model(project):
    path = project(BASE_SPEC.replace("./tiny-model", "./absent").replace("train.jsonl", "nope.jsonl"))
    assert find(path, "data.train").summary.endswith("data/nope.jsonl does not exist")
    assert find(path, "base_model").summary == "./absent does not exist"


def test_job_reference_must_name_a_spec_beside_it(project):
    project(BASE_SPEC.replace("name: tiny", "name: first-stage"), name="first.yaml")
    assert check_spec(project(BASE_SPEC.replace("./tiny-model", "{job: first-stage}"))).errors == []
    error = find(project(BASE_SPEC.replace("./tiny-model", "{job: second-stage}")), "base_model.job")
    assert error.summary.startswith("no spec named 'second-stage'")


def test_hub_model_not_cached_is_a_warning(project, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = check_spec(project(BASE_SPEC.replace("./tiny-model", "someorg/some-model")))
    assert result.errors == [] and "is not on this machine" in result.warnings[0].summary
    assert "runner lock" in result.warnings[0].hint


def test_hub_model_in_the_cache_is_checked(project, monkeypatch, tmp_path, model_dir):
    cache = tmp_path / "cache"
    snapshot = cache / "models--someorg--some-model" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    model_dir.rename(snapshot)
    (cache / "models--someorg--some-model" / "refs").mkdir()
    (cache / "models--someorg--some-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    spec = BASE_SPEC.replace("./tiny-model", "someorg/some-model") + "trainable:\n  mode: freeze\n  layers: [9]\n"
    assert "layer 9 does not exist" in find(project(spec), "trainable.layers").summary


def test_bad_hub_id(project):
    error = find(project(BASE_SPEC.replace("./tiny-model", "not a/valid/id")), "base_model.hub")
    assert "is not a hub id" in error.summary


def test_reward_head_is_trained_without_being_named(project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 4)
    spec = BASE_SPEC.replace("method: sft", "method: reward") + "trainable:\n  mode: freeze\n  layers: last:1\n"
    assert check_spec(project(spec)).errors == []


def test_reward_function_module_must_exist(project, tmp_path):
    spec = BASE_SPEC.replace("method: sft", "method: grpo") + "grpo:\n  reward: {function: 'scoring:score'}\n"
    error = find(project(spec), "grpo.reward.function")
    assert "module 'scoring' is neither beside the spec" in error.summary
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(prompts)\n")
    assert check_spec(project(spec)).errors == []


def test_reward_model_job_must_exist(project):
    spec = BASE_SPEC.replace("method: sft", "method: ppo") + "ppo:\n  reward: {model: {job: my-rm}}\n"
    assert "no spec named 'my-rm'" in find(project(spec), "ppo.reward.model.job").summary


def test_values_in_the_wrong_case_get_a_hint(project):
    error = find(project(BASE_SPEC.replace("method: sft", "method: SFT")), "method")
    assert error.hint == "values are case-sensitive: write 'sft'"


def test_a_missing_data_file_suggests_the_one_beside_it(project):
    error = find(project(BASE_SPEC.replace("train.jsonl", "trian.jsonl")), "data.train")
    assert error.summary == "data/trian.jsonl does not exist" and error.hint == "did you mean 'data/train.jsonl'?"
    error = find(project(BASE_SPEC.replace("train.jsonl", "zzz.jsonl")), "data.train")
    assert error.hint is None


def test_a_tracker_that_is_not_installed_is_a_warning_with_the_pip_command(project, monkeypatch):
    from runner import trackers
    from runner.install import pip_install

    absent = dataclasses.replace(trackers.TRACKERS["wandb"], modules=("no_such_module_here",))
    monkeypatch.setitem(trackers.TRACKERS, "wandb", absent)
    result = check_spec(project(BASE_SPEC + "outputs:\n  report_to: [tensorboard, wandb]\n"))
    assert result.errors == []
    (warning,) = result.warnings
    assert warning.path == "outputs.report_to[1]" and "wandb is not installed here" in warning.summary
    assert warning.hint == f"where jobs run: {pip_install('wandb')}"  # its forms: tests/test_install.py
    assert find(project(BASE_SPEC + "outputs:\n  report_to: [mlflow, mlflow]\n"), "outputs.report_to").is_error


QLORA = BASE_SPEC + "trainable:\n  mode: lora\n  quantize: {bits: 4, type: nf4}\n"


def test_a_quantized_base_trains_adapters_only(project):
    error = find(project(QLORA.replace("mode: lora", "mode: full")), "trainable.quantize")
    assert error.severity == "error" and "cannot be trained in mode full" in error.summary
    assert "mode: lora" in error.hint
    assert find(project(QLORA.replace("mode: lora", "mode: freeze")), "trainable.quantize").severity == "error"
    assert check_spec(project(QLORA)).errors == []


def test_four_bit_settings_need_four_bits(project):
    error = find(project(QLORA.replace("bits: 4", "bits: 8")), "trainable.quantize.type")
    assert "applies to 4-bit storage" in error.summary and (error.span.line, error.span.column) == (9, 23)
    assert check_spec(project(BASE_SPEC + "trainable:\n  mode: lora\n  quantize: 8\n")).errors == []


def test_a_gguf_file_is_quantized_again_only_when_the_spec_says_so(project, tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")  # the rule reads the spec, not the file
    spec = QLORA.replace("./tiny-model", "./model.gguf")
    result = check_spec(project(spec))
    error = next(d for d in result.diagnostics if d.path == "trainable.quantize")
    assert "already quantised in its own format" in error.summary and "requantize_gguf: true" in error.hint
    accepted = check_spec(project(spec.replace("type: nf4}", "type: nf4, requantize_gguf: true}")))
    assert not [d for d in accepted.diagnostics if d.path == "trainable.quantize"]


def test_a_quantized_base_merges_after_the_run(project):
    error = find(project(QLORA + "outputs:\n  save: merged\n"), "outputs.save")
    assert "runner export" in error.hint


def test_a_missing_bitsandbytes_is_an_error_where_jobs_run_and_a_warning_where_specs_are_only_checked(
        project, monkeypatch):
    from runner import quantization
    from runner.install import pip_install

    monkeypatch.setattr(quantization, "installed", lambda: False)
    error = find(project(QLORA), "trainable.quantize")
    assert error.severity == "error" and error.hint == f"install it: {pip_install('qlora')}" and "[qlora]" in error.hint
    monkeypatch.setattr(quantization, "runs_jobs", lambda: False)  # a pre-commit hook's environment
    warning = find(project(QLORA), "trainable.quantize")
    assert warning.severity == "warning" and pip_install("qlora") in warning.hint


def test_job_references_that_lead_back_to_the_spec_are_errors(project):
    """`{job: self}` and a <-> b used to pass validate and wait in `queued: dependency` forever (issue 20)."""
    self_spec = BASE_SPEC.replace("./tiny-model", "{job: tiny}")
    assert "a job cannot build on its own result" in find(project(self_spec), "base_model.job").summary
    project(BASE_SPEC.replace("name: tiny", "name: b").replace("./tiny-model", "{job: c}"), name="b.yaml")
    project(BASE_SPEC.replace("name: tiny", "name: c").replace("./tiny-model", "{job: a}"), name="c.yaml")
    a = project(BASE_SPEC.replace("name: tiny", "name: a").replace("./tiny-model", "{job: b}"), name="a.yaml")
    assert "makes a cycle: a -> b -> c -> a" in find(a, "base_model.job").summary
    c = project(BASE_SPEC.replace("name: tiny", "name: c").replace("./tiny-model", "./tiny-model"), name="c.yaml")
    assert check_spec(a).errors == [] and c.exists()  # the chain now ends at a model


def test_a_yaml_file_with_a_name_line_is_not_a_spec_of_that_name(project):
    """A CI file's `name:` beside the specs made every `{job: NAME}` of that name ambiguous (issue 20)."""
    project(BASE_SPEC.replace("name: tiny", "name: first-stage"), name="first.yaml")
    project("name: first-stage\non: [push]\njobs: {}\n", name="ci.yaml")
    assert check_spec(project(BASE_SPEC.replace("./tiny-model", "{job: first-stage}"))).errors == []


def test_a_flattened_section_key_is_shown_the_nesting_it_needs(project):
    spec = project(BASE_SPEC + "trainable:\n  mode: lora\n  lora_r: 8\n  lora_dropout: 0.1\n")
    assert find(spec, "trainable.lora_r").hint == "'r' is a key of 'lora': write lora: {r: 8}"
    assert find(spec, "trainable.lora_dropout").hint == "'dropout' is a key of 'lora': write lora: {dropout: 0.1}"
    assert find(project(BASE_SPEC + "trainable:\n  mode: lora\n  lroa: {r: 8}\n"), "trainable.lroa").hint == \
        "did you mean 'lora'?"
