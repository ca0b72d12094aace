"""The memory estimate's method terms, each read from the method's descriptor (issue 12's drift fixes)."""

from tests.conftest import write_jsonl
from runner.plan.render import render
from tests.plan.test_planner import CPU, TWO_GPUS, plan_of

SCORE_HEAD = 32
"""Parameters a scalar head adds to the tiny model (hidden size 32, one output)."""


def items(plan) -> dict[str, int]:
    return {item.name: item.bytes for item in plan.memory.items}


def prompts(tmp_path, count=8):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": f"What is your name? {i}"} for i in range(count)])


def test_grpo_counts_its_reward_model_at_its_own_size_in_fp32(tiny_project, tmp_path):
    prompts(tmp_path)
    plan = plan_of(tiny_project, "grpo:\n  reward: {model: ./model}\n  num_generations: 2\n"
                                 "  max_completion_length: 8\n", **{"method: sft": "method: grpo"})
    assert items(plan)["reward model"] == (plan.model.total_parameters + SCORE_HEAD) * 4
    assert "reference model" not in items(plan)  # beta 0 loads none


def test_ppo_reward_model_is_fp32_although_the_policy_computes_in_bf16(tiny_project, tmp_path):
    prompts(tmp_path)
    plan = plan_of(tiny_project, "trainable:\n  mode: lora\nhardware:\n  gpus: 1\nppo:\n  reward: {model: ./model}\n"
                                 "  response_length: 8\n", machine=TWO_GPUS, **{"method: sft": "method: ppo"})
    assert plan.value("hardware.precision") == "bf16"
    assert items(plan)["reward model"] == (plan.model.total_parameters + SCORE_HEAD) * 4
    assert "value model" not in items(plan)  # LoRA: a second adapter on the shared base


def test_the_generation_cache_holds_every_sequence_sampled_at_once(tiny_project, tmp_path):
    """GRPO samples the step's completions together: the cache follows the batch, not the micro-batch."""
    prompts(tmp_path, 16)
    grpo = "grpo:\n  reward: {function: 'scoring:score'}\n  num_generations: 2\n  max_completion_length: 8\n"
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")

    def cache(batch, micro):
        plan = plan_of(tiny_project, grpo + f"training:\n  batch_size: {batch}\n  micro_batch_size: {micro}\n"
                                            "  max_length: 32\n", **{"method: sft": "method: grpo"})
        return items(plan)["generation cache"]

    assert cache(4, 1) == cache(4, 4)
    assert cache(8, 2) == 2 * cache(4, 2)


def test_a_separate_value_model_is_trained_in_fp32_with_adam(tiny_project, tmp_path):
    prompts(tmp_path)
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    plan = plan_of(tiny_project, "ppo:\n  reward: {function: 'scoring:score'}\n  response_length: 8\n",
                   machine=CPU, **{"method: sft": "method: ppo"})
    memory = items(plan)
    assert memory["value model"] == plan.model.total_parameters * 16
    assert memory["reference model"] == plan.model.total_parameters * 4 and "reward model" not in memory


def test_a_preference_pair_without_a_reference_runs_both_answers_with_gradients(tiny_project, tmp_path):
    """SimPO and ORPO run chosen and rejected in one concatenated forward: twice the activations and
    logits of one answer a row (measured on SmolLM2 with torch's memory profiler, bench/memory.py)."""
    def words(start):
        return " ".join(f"word{i}" for i in range(start, start + 200))

    training = "training:\n  batch_size: 2\n  micro_batch_size: 2\n  max_length: 32\n"

    def memory_of(method, rows):
        write_jsonl(tmp_path / "data" / "train.jsonl", rows)
        return items(plan_of(tiny_project, training, **{"method: sft": f"method: {method}"}))

    single = memory_of("sft", [{"text": words(0)}] * 3 + [{"text": "Short."}])  # padded, as TRL's batches are
    for method in ("simpo", "orpo"):
        pair = memory_of(method, [{"prompt": "Your name?", "chosen": words(0), "rejected": words(500)}] * 4)
        assert pair["logits"] == 2 * single["logits"], method
        assert pair["activations"] == 2 * single["activations"], method


def test_lora_dropout_keeps_copies_only_where_the_trainer_leaves_dropout_on(tiny_project, tmp_path):
    """TRL's preference trainers set every dropout probability to 0 (disable_dropout), so LoRA's dropout
    hands its input on uncopied: ORPO-LoRA counts what a dropout-free SFT-LoRA does, twice (chosen and
    rejected). On SmolLM2 (bench/memory.py) ORPO-LoRA measured ~950 MiB below SFT-LoRA at the same tokens."""
    def words(start):
        return " ".join(f"word{i}" for i in range(start, start + 200))

    def activations(method, rows, dropout):
        write_jsonl(tmp_path / "data" / "train.jsonl", rows)
        spec = ("training:\n  batch_size: 2\n  micro_batch_size: 2\n  max_length: 32\n"
                f"trainable:\n  mode: lora\n  lora: {{r: 4, dropout: {dropout}}}\n")
        return items(plan_of(tiny_project, spec, **{"method: sft": f"method: {method}"}))["activations"]

    text = [{"text": words(0)}] * 3 + [{"text": "Short."}]  # padded, as TRL's batches are
    pair = [{"prompt": "Your name?", "chosen": words(0), "rejected": words(500)}] * 4
    assert activations("sft", text, 0.05) > activations("sft", text, 0.0)  # runner's SFT loop keeps dropout on
    for method in ("orpo", "simpo", "dpo"):
        assert activations(method, pair, 0.05) == 2 * activations("sft", text, 0.0), method


LINEAR = {f"model.layers.{i}.{name}.weight": shape for i in range(4) for name, shape in (
    ("self_attn.q_proj", (32, 32)), ("self_attn.k_proj", (16, 32)), ("self_attn.v_proj", (16, 32)),
    ("self_attn.o_proj", (32, 32)), ("mlp.gate_proj", (64, 32)), ("mlp.up_proj", (64, 32)),
    ("mlp.down_proj", (32, 64)))}
"""The tiny model's linear layers (hidden 32, MLP 64, 2 key/value heads of 8)."""


def test_a_quantized_base_counts_its_weights_at_their_stored_size(tiny_project):
    from runner.quantization import Storage

    plan = plan_of(tiny_project, "trainable:\n  mode: lora\n  quantize: 4\n  lora: {r: 4}\n")
    quantized = plan.trainable.quantized
    shapes = LINEAR
    assert sorted(quantized.quantized) == sorted(shapes)  # the blocks' linear layers; not the embedding
    storage = Storage(4, "nf4", True, "fp32")
    assert quantized.stored_bytes == sum(storage.weight_bytes(*shape) for shape in shapes.values())
    plain = plan.model.total_parameters - sum(rows * columns for rows, columns in shapes.values())
    assert items(plan)["weights"] == quantized.stored_bytes + plain * 4 + plan.trainable.trainable_parameters * 4
    assert {(row.family, row.storage) for row in plan.trainable.table} == {
        ("embeddings", ""), ("attention", "nf4"), ("mlp", "nf4"), ("norm", "")}
    text = render(plan)
    assert "storage" in text and "base storage: 4-bit NF4, double quant, compute fp32 (bitsandbytes)" in text


def test_the_lora_variants_are_in_the_plan(tiny_project):
    plan = plan_of(tiny_project, "trainable:\n  mode: lora\n  lora: {r: 16, alpha: 16, rslora: true, dora: true, "
                                 "loraplus_lr_ratio: 16}\n")
    lora = plan.trainable.lora
    assert (lora.dora, lora.rslora, lora.loraplus_lr_ratio, lora.scaling) == (True, True, 16, 4)
    assert "alpha/sqrt(r) = 4 (rsLoRA), DoRA" in render(plan) and "B matrices at 16x the learning rate" in render(plan)
    plain = plan_of(tiny_project, "trainable:\n  mode: lora\n  lora: {r: 16, alpha: 16}\n")
    outputs = sum(rows for rows, _ in LINEAR.values())
    assert lora.adapter_parameters == plain.trainable.lora.adapter_parameters + outputs  # a magnitude per output
    assert items(plan)["activations"] > items(plain)["activations"]  # DoRA keeps each base output


def test_the_estimate_is_its_largest_moment_and_names_what_it_predicts(tiny_project):
    from runner.execute import checkpoints
    from runner.plan import memory

    plan = plan_of(tiny_project)
    estimate = plan.memory
    moments = {moment.name: moment.bytes for moment in estimate.moments}
    assert set(moments) == {"loading", "a training step", "writing a checkpoint", "saving"}
    assert estimate.total_bytes == max(moments.values()) == moments[estimate.peak]
    assert sum(item.bytes for item in estimate.items) == estimate.total_bytes  # the daemon sums the items
    assert "peak resident memory (RSS) of the process" in estimate.measures
    assert memory.CHECKPOINT_FILE_BYTES == checkpoints.FILE_BYTES
    gpu = plan_of(tiny_project, "hardware:\n  gpus: 1\n", machine=TWO_GPUS).memory
    assert [moment.name for moment in gpu.moments] == ["a training step"] and "CUDA context" in gpu.measures


def test_a_mask_keeps_keys_and_values_for_every_head_and_the_mask_in_each_block(tiny_project, tmp_path):
    """transformers gives sdpa repeated keys and values when batches carry a mask; sdpa keeps them, and the mask
    as floats, for the backward pass in each block. Measured on SmolLM2's shape (9 query heads, 3 key/value
    heads, 30 blocks), 4 rows of 256 tokens on the CPU: +123-154 MiB when one row is padded, 120 MiB by this
    count; full-length rows carry no mask (causal) and keep neither."""
    training = "training:\n  batch_size: 2\n  micro_batch_size: 2\n  max_length: 32\n"
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"text": " ".join(["word"] * 200)}] * 4)
    full = plan_of(tiny_project, training)
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"text": " ".join(["word"] * 200)}] * 3 + [{"text": "short"}])
    padded = plan_of(tiny_project, training)
    assert full.value("training.max_length") == padded.value("training.max_length") == 32
    rows, length, blocks, fp32 = 2, 32, 4, 4
    repeated = 2 * (4 - 2) * 8  # keys and values of 4 query heads instead of 2 key/value heads, 8 wide
    per_block = rows * length * repeated + rows * length * length
    assert items(padded)["activations"] - items(full)["activations"] == blocks * per_block * fp32
    assert "masked attention" in render(padded) and "masked attention" not in render(full)


def test_disk_counts_checkpoints_while_running_and_keeps_them_only_when_asked(tiny_project):
    spec = "training:\n  max_steps: 8\noutputs:\n  checkpoint_every: 2\n  keep_checkpoints: 2\n"
    plan = plan_of(tiny_project, spec)
    disk = {item.name: item for item in plan.disk.items}
    one = plan.trainable.trainable_parameters * 12  # runner's SFT loop: the weights and two AdamW states
    assert disk["checkpoints"].bytes == 3 * one and not disk["checkpoints"].kept  # up to keep + 1 at once
    assert disk["final model"].bytes >= plan.model.total_parameters * 4
    assert plan.disk.kept_bytes == disk["final model"].bytes
    kept = plan_of(tiny_project, spec + "  keep_checkpoints_after_success: true\n").disk
    assert kept.kept_bytes == disk["final model"].bytes + 2 * one


def test_on_the_cpu_the_heap_s_freed_adapter_outputs_count_and_not_on_a_gpu(tiny_project):
    """glibc's heap keeps each adapted module's freed base output resident; bench/memory.py measured LoRA
    15% above its estimate on SmolLM2 without this term. A GPU's caching allocator reuses them."""
    lora = "trainable:\n  mode: lora\n  lora: {r: 4, dropout: 0.0}\n"
    on_cpu = plan_of(tiny_project, lora, machine=CPU)
    out_width = sum(LINEAR[target + ".weight"][0] for target in on_cpu.trainable.lora.targets)
    added = items(on_cpu)["activations"] - items(plan_of(tiny_project, "trainable: {mode: full}\n",
                                                         machine=CPU))["activations"]
    assert out_width and added > 0 and added % (out_width * 4) == 0  # tokens x each module's output, fp32
    assert "the C heap keeps each adapted module's base output" in render(on_cpu)
    assert "the C heap" not in render(plan_of(tiny_project, lora, machine=TWO_GPUS))


def test_runner_s_ppo_loop_on_the_cpu_counts_the_passes_the_heap_keeps_and_not_on_a_gpu(tiny_project, tmp_path):
    """Its optimise phase runs the policy and value passes again and again; glibc's heap kept two more passes'
    activations and logits resident (measured on SmolLM2: 0.52 of the peak without this term)."""
    prompts(tmp_path)
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    def plan(machine):
        return plan_of(tiny_project, "trainable:\n  mode: lora\nppo:\n  reward: {function: 'scoring:score'}\n"
                       "  response_length: 8\nhardware: {gpus: 1}\n", machine=machine, **{"method: sft": "method: ppo"})

    on_cpu = items(plan(CPU))
    assert on_cpu["heap-kept passes"] == 2 * (on_cpu["activations"] + on_cpu["logits"])
    assert "heap-kept passes" not in items(plan(TWO_GPUS))  # the caching allocator reuses the blocks
