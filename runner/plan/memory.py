"""Memory estimate per device: arithmetic on the model's shape, no torch.

What it predicts (the plan says which): on a CPU, the peak resident memory (RSS) of the process that
runs the job, everything in it; on a GPU, what the device gives out: the memory PyTorch's allocator
reserves plus the CUDA context. bench/memory.py holds every term against that measurement.

A run has several moments, and its peak is the largest of them:
    loading    the runtime, the tokenizer, and the weights (a GGUF file dequantised first when its
               fp32 copy is not cached yet)
    a step     weights, gradients, optimizer states, the activations the backward pass needs, the
               logits, the models a method holds beside the policy, the data
    checkpoint weights and optimizer states (gradients are freed), and the bytes being written
    saving     the weights, and the copy of them that save_pretrained serialises
On a GPU only the step counts: checkpoints and saving go through host memory.

The executor keeps master weights in fp32 and computes in bf16/fp16 through autocast (full and freeze
modes); with LoRA the frozen base is stored in the compute dtype and only the adapters are fp32; a
quantized base (QLoRA) stores its linear weights in 4 or 8 bits plus their scales. AdamW keeps two
fp32 states per trained parameter. Activations are counted per token and per block that the backward
pass reaches: blocks below the lowest trained one keep nothing when nothing under them is trained. The
per-token constants were fitted against measured peaks (bench/memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from runner.methods.registry import ExtraModel
from runner.plan.models import MemoryEstimate, MemoryItem, ModelFacts

GIB = 1024**3
MIB = 1024**2
# Saved activation elements per token and block, in units of the hidden size, the MLP
# width and the key/value width (norm inputs and outputs, q/k/v/o, gate/up/act/product...).
ACT_PER_HIDDEN = 12
ACT_PER_INTERMEDIATE = 4
ACT_PER_KV = 4
CUDA_CONTEXT_BYTES = int(0.6 * GIB)
"""CUDA context and kernels: given out by the device, not by PyTorch's allocator."""
CPU_RUNTIME_BYTES = int(0.5 * GIB)
"""The process with torch, transformers and PEFT imported, and the plan made (measured 0.41-0.47 GiB with
torch 2.13 and transformers 5.24)."""
TRL_RUNTIME_BYTES = int(0.1 * GIB)
"""What importing TRL adds, for the methods it trains (measured 0.09 GiB with TRL 1.16)."""
TOKENIZER_BYTES_PER_ENTRY = 1024
"""A fast tokenizer in memory, per vocabulary entry (SmolLM2's 49,152 entries: 46 MiB)."""
DATA_BYTES_PER_TOKEN = 128
"""Encoded rows kept for the whole run: token ids and labels as Python lists, and for the TRL trainers their
Arrow tables too."""
GGUF_CONVERSION_COPIES = 3
"""Dequantising a GGUF holds the loaded model, its rebuilt clean copy and the buffers of the save, in fp32."""
CHECKPOINT_FILE_BYTES = 256 * MIB
"""runner's own loops write a checkpoint's tensors in files of about this size (runner.execute.checkpoints'
FILE_BYTES; a test keeps them equal): each is serialised in memory, twice over (safetensors' bytes, then
the file's), before it is written."""

HEAP_KEPT_RL_PASSES = 2
"""runner's RL loop on the CPU: passes beyond the one a step counts whose memory the heap keeps (see
Workload.heap_passes)."""


@dataclass(frozen=True)
class Workload:
    mode: str
    """full | freeze | lora"""
    precision: str
    device: str
    micro_batch: int
    seq_len: int
    checkpointing: bool
    trainable_parameters: int
    lowest_trained_layer: int | None
    sequences_per_row: int = 1
    """Sequences run with gradients per row (2 for chosen and rejected answers)."""
    logits: bool = True
    """Whether the method computes vocabulary logits (a score head does not)."""
    generation_tokens: int = 0
    """RL: tokens generated after the prompt."""
    rollout_sequences: int = 0
    """RL: sequences sampled at once on a device (the whole per-device batch), which the cache holds."""
    extra_models: tuple[MemoryItem, ...] = ()
    """Models held beside the policy (reference, value, reward), from `extra_model`."""
    adapter_inputs: int = 0
    """LoRA: per token, the summed input width of every adapted module (kept for the adapter's backward)."""
    adapter_dropout: bool = False
    """LoRA dropout makes a copy of each adapted module's input (and a mask), when the spec gives it a
    probability above 0 and the method's trainer leaves dropout on."""
    adapter_outputs: int = 0
    """DoRA: per token, the output widths kept for the backward pass: each adapted module's base output (it
    rescales it) and its adapter's output, measured with bench/memory.py."""
    adapter_heap_outputs: int = 0
    """LoRA on the CPU: per token, the summed output width of every adapted module. Each adapted module makes
    its base output and then a second tensor, that output plus the adapter's; glibc's heap keeps the freed
    first ones resident across the step (its mmap threshold rises to the size of freed blocks, so they come
    from the heap, not their own mappings). Measured on SmolLM2-135M's shape, 4 x 256 tokens in fp32: LoRA's
    process peaked 0.7 GiB above the tensors a step keeps; this term counts 0.6 GiB of it. On a GPU the
    caching allocator reuses the freed blocks within the step: not counted there."""
    heap_passes: int = 0
    """runner's RL loop on the CPU: further passes' activations and logits that glibc's heap keeps resident. Its
    optimise phase runs the policy and the value function forward and back again and again over the same rollout
    (num_ppo_epochs times each); the blocks each pass frees stay in the heap, and the next pass's, of other sizes,
    grow it. Measured with a probe reading VmRSS around each phase of `runner run` (SmolLM2-135M, LoRA r=16 with the
    shared value adapter, 4 x 80 tokens, 4 PPO epochs): the first policy pass raised the RSS by 0.84 GiB (this
    estimate's activations and logits), the next five passes by 2.0 GiB more, after which it held (the rollout,
    checkpoint and samples added nothing): two passes' worth beyond the one counted. On a GPU the caching
    allocator reuses the blocks: not counted there."""
    largest_adapted: int = 0
    """DoRA: elements of the largest adapted weight; its norm is taken on a dense copy of W + BA each forward."""
    quantized_parameters: int = 0
    """QLoRA: base weights stored in 4 or 8 bits, and ..."""
    quantized_bytes: int = 0
    """... and the bytes they take with their quantization constants."""
    largest_quantized: int = 0
    """QLoRA: elements of the largest quantized weight, dequantised to the compute dtype for each product."""
    padded: bool = True
    """Whether batches carry an attention mask (padding, packing, prompts). With one, transformers repeats the
    key/value heads for sdpa, which keeps them at full width for the backward pass, and keeps the mask (as floats)
    in every block; full-length rows run causal without a mask, and sdpa keeps the grouped heads."""
    strategy: str = "ddp"
    """ddp: every process holds the whole model; fsdp: weights, gradients and optimizer states are
    sharded over `devices` processes and each block is all-gathered when it runs."""
    devices: int = 1
    offload: bool = False
    """fsdp: the shards live in CPU memory; the device holds only the all-gathered blocks."""
    trl: bool = False
    """The method trains with a TRL trainer (its import, its checkpoints of the whole model)."""
    vocab_size: int = 0
    """The tokenizer's entries."""
    data_tokens: int = 0
    """Tokens of every encoded row the run keeps (an epoch of training rows, the eval rows)."""
    gguf_conversion: bool = False
    """The base is a GGUF file whose fp32 copy is not cached yet: the run dequantises it first."""
    saved_parameters: int = 0
    """Parameters the final save writes (the adapter alone, or the whole model) ..."""
    saved_bytes_each: int = 4
    """... at this many bytes each."""


def estimate(facts: ModelFacts, work: Workload, budget_bytes: int, budget_source: str) -> MemoryEstimate:
    found = moments(facts, work, work.checkpointing)
    peak = max(found, key=lambda name: _sum(found[name]))
    total = _sum(found[peak])
    without = total if not work.checkpointing else total_bytes(facts, replace(work, checkpointing=False))
    with_ckpt = total if work.checkpointing else total_bytes(facts, replace(work, checkpointing=True))
    fits = total <= budget_bytes
    return MemoryEstimate(items=found[peak], total_bytes=total, without_checkpointing_bytes=without,
                          with_checkpointing_bytes=with_ckpt, budget_bytes=budget_bytes,
                          budget_source=budget_source, fits=fits,
                          advice=[] if fits else advice(facts, work, budget_bytes), measures=measured_quantity(work),
                          peak=peak, moments=[MemoryItem(name=name, bytes=_sum(items)) for name, items in found.items()],
                          unknown=unknown_terms(work))


def measured_quantity(work: Workload) -> str:
    if work.device == "cuda":
        return "GPU memory the device gives out: PyTorch's reserved memory plus the CUDA context"
    return "peak resident memory (RSS) of the process that runs the job, everything in it"


def unknown_terms(work: Workload) -> list[str]:
    """What cannot be known before loading, said in the plan with the side the estimate errs on."""
    notes = ["memory glibc's heap keeps after freeing it is counted where bench/memory.py measured it (LoRA's "
             "and DoRA's freed outputs, a quantized base's dequantised copies, PPO's repeated passes), not "
             "elsewhere"
             if work.device == "cpu" else
             "the CUDA context's size depends on the driver and GPU; counted as 0.6 GiB"]
    if work.gguf_conversion:
        notes.append("the GGUF file is dequantised in this run (its fp32 copy is not cached yet): counted at "
                     f"{GGUF_CONVERSION_COPIES} fp32 copies of the model while loading")
    return notes


def total_bytes(facts: ModelFacts, work: Workload) -> int:
    """The estimate's total: the largest moment's."""
    return max(_sum(items) for items in moments(facts, work, work.checkpointing).values())


def _sum(items: list[MemoryItem]) -> int:
    return sum(item.bytes for item in items)


def moments(facts: ModelFacts, work: Workload, checkpointing: bool) -> dict[str, list[MemoryItem]]:
    """The terms of each moment of the run (see the module's docstring), by moment."""
    step = step_items(facts, work, checkpointing)
    terms = {item.name: item for item in step}
    if work.device == "cuda":
        return {"a training step": step}
    held = [terms["runtime"], terms["tokenizer"], *([terms["data"]] if "data" in terms else [])]
    weights = terms["weights"]
    loading = [terms["runtime"], terms["tokenizer"], weights]
    if work.gguf_conversion:
        conversion = facts.total_parameters * 4 * GGUF_CONVERSION_COPIES
        loading = [terms["runtime"], terms["tokenizer"],
                   MemoryItem(name="GGUF dequantisation", bytes=max(conversion, weights.bytes),
                              note=f"{GGUF_CONVERSION_COPIES} fp32 copies of the model while it is converted, "
                                   "once (cached afterwards)")]
    checkpoint_bytes = _checkpoint_bytes(facts, work)
    buffer = 2 * min(checkpoint_bytes, CHECKPOINT_FILE_BYTES) if not work.trl else _saved_bytes(work)
    writing = [*held, weights, terms["optimizer"], *work.extra_models,
               MemoryItem(name="checkpoint buffers", bytes=buffer,
                          note="a TRL checkpoint's model file serialised in memory" if work.trl else
                          f"each file of the checkpoint ({checkpoint_bytes / MIB:,.0f} MiB in files of at most "
                          f"{CHECKPOINT_FILE_BYTES // MIB} MiB) serialised twice before it is written")]
    saving = [*held, weights, *work.extra_models,
              MemoryItem(name="saved copy", bytes=_saved_bytes(work),
                         note="save_pretrained serialises what it writes into memory first")]
    return {"loading": loading, "a training step": step, "writing a checkpoint": writing, "saving": saving}


def _checkpoint_bytes(facts: ModelFacts, work: Workload) -> int:
    """A checkpoint's tensors on this process: the trained parameters and their two AdamW states."""
    return -(-work.trainable_parameters * 12 // (work.devices if work.strategy == "fsdp" else 1))


def _saved_bytes(work: Workload) -> int:
    return work.saved_parameters * work.saved_bytes_each


def step_items(facts: ModelFacts, work: Workload, checkpointing: bool) -> list[MemoryItem]:
    """The terms of a training step."""
    half = work.precision in ("bf16", "fp16")
    act_bytes = 2 if half else 4
    params = facts.total_parameters
    adapter_only = work.mode == "lora"
    base_bytes = 2 if (adapter_only and half) else 4
    plain = params - work.quantized_parameters
    weights = plain * base_bytes + work.quantized_bytes + (work.trainable_parameters * 4 if adapter_only else 0)
    note = f"{plain / 1e6:.1f}M x {base_bytes} B"
    if work.quantized_parameters:
        note = (f"{work.quantized_parameters / 1e6:.1f}M quantized in {work.quantized_bytes / MIB:,.0f} MiB with "
                f"their scales + {note}")
    items = [
        MemoryItem(name="weights", bytes=weights, note=note + (" + adapters in fp32" if adapter_only else "")),
        MemoryItem(name="gradients", bytes=work.trainable_parameters * 4, note="fp32, trained parameters only"),
        MemoryItem(name="optimizer", bytes=work.trainable_parameters * 8, note="AdamW: two fp32 states"),
    ]
    if work.strategy == "fsdp":
        items = _sharded(items, facts, work, half)
    sequences = work.micro_batch * work.sequences_per_row
    tokens = sequences * (work.seq_len + work.generation_tokens)
    kept = 0 if work.lowest_trained_layer is None else facts.num_layers - work.lowest_trained_layer
    adapters = tokens * work.adapter_inputs * (act_bytes + 1) if work.adapter_dropout else 0
    adapters += tokens * (work.adapter_outputs + work.adapter_heap_outputs) * act_bytes
    per_block = _block_activation_elements(facts, work, tokens) * act_bytes
    if checkpointing and kept:
        activations = kept * tokens * facts.hidden_size * act_bytes + per_block + adapters // max(kept, 1)
        note = f"checkpointed: block inputs of {kept} blocks + one block recomputed"
    else:
        activations = kept * per_block + adapters
        note = f"{kept} of {facts.num_layers} blocks keep activations for the backward pass"
        note += "; LoRA dropout copies each adapted input" if work.adapter_dropout and work.adapter_inputs else ""
        note += "; DoRA keeps each adapted module's base and adapter outputs" if work.adapter_outputs else ""
        note += "; the C heap keeps each adapted module's base output" if work.adapter_heap_outputs else ""
    note += "; masked attention keeps keys and values for every head, and the mask" if work.padded else ""
    items.append(MemoryItem(name="activations", bytes=activations, note=note))
    if work.logits:
        logits = tokens * facts.vocab_size * (act_bytes + 8)
        items.append(MemoryItem(name="logits", bytes=logits, note="logits, fp32 copy for the loss, and its gradient"))
    if work.heap_passes:
        one_pass = activations + (logits if work.logits else 0)
        items.append(MemoryItem(name="heap-kept passes", bytes=work.heap_passes * one_pass,
                                note=f"the C heap keeps the activations and logits of {work.heap_passes} more of "
                                     "the optimise phase's policy and value passes (measured)"))
    dequantised = (work.quantized_parameters if work.device == "cpu" else work.largest_quantized) * act_bytes
    transient = dequantised + 3 * work.largest_adapted * 4
    if transient:
        items.append(MemoryItem(name="dense copies", bytes=transient, note=" and ".join(
            ([f"one quantized weight dequantised for its product ({work.largest_quantized / 1e6:.1f}M)"
              if work.device != "cpu" else
              "every quantized weight dequantised for its products, the copies held by the C heap (measured)"]
             if work.largest_quantized else [])
            + (["DoRA's W + BA and its norm for the largest adapted weight"] if work.largest_adapted else []))))
    items.extend(work.extra_models)
    if work.generation_tokens:
        kv_width = facts.num_key_value_heads * (facts.hidden_size // facts.num_attention_heads)
        sampled = work.rollout_sequences * (work.seq_len + work.generation_tokens)
        cache = 2 * facts.num_layers * kv_width * sampled * act_bytes
        items.append(MemoryItem(name="generation cache", bytes=cache,
                                note=f"keys and values of the {work.rollout_sequences} sequences sampled at once"))
    if work.device == "cuda":
        items.append(MemoryItem(name="runtime", bytes=CUDA_CONTEXT_BYTES, note="CUDA context"))
        return items
    runtime = CPU_RUNTIME_BYTES + (TRL_RUNTIME_BYTES if work.trl else 0)
    items += [
        MemoryItem(name="runtime", bytes=runtime,
                   note="Python, torch, transformers, PEFT" + (", TRL" if work.trl else "") + " and the plan"),
        MemoryItem(name="tokenizer", bytes=work.vocab_size * TOKENIZER_BYTES_PER_ENTRY,
                   note=f"{work.vocab_size:,} entries x {TOKENIZER_BYTES_PER_ENTRY // 1024} KiB"),
        MemoryItem(name="data", bytes=work.data_tokens * DATA_BYTES_PER_TOKEN,
                   note=f"{work.data_tokens:,} encoded tokens x {DATA_BYTES_PER_TOKEN} B"),
    ]
    return items


def extra_model(model: ExtraModel, parameters: int) -> MemoryItem:
    """A model beside the policy: frozen ones in fp32 (as the recipes load them); trained ones with fp32
    gradients and two AdamW states as well."""
    return MemoryItem(name=model.name, bytes=parameters * (16 if model.trained else 4),
                      note=f"{parameters / 1e6:.1f}M parameters, {model.note}")


def _sharded(items: list[MemoryItem], facts: ModelFacts, work: Workload, half: bool) -> list[MemoryItem]:
    """FSDP: each process keeps 1/N of the weights, gradients and optimizer states (in CPU memory
    with offload), plus the blocks it has all-gathered in the compute dtype: the root's parameters
    (embeddings, final norm and output head, gathered for the whole step), the running block and
    the prefetched next one, and the unsharded gradients of one block before they are
    reduce-scattered."""
    where = "CPU memory" if work.offload else f"1/{work.devices} per device"
    sharded = [MemoryItem(name=item.name, bytes=0 if work.offload else -(-item.bytes // work.devices),
                          note=f"{item.note}; sharded, {where}") for item in items]
    block = block_parameters(facts)
    root = facts.total_parameters - facts.num_layers * block
    compute_bytes = 2 if half else 4
    trained_share = work.trainable_parameters / max(facts.total_parameters, 1)
    gathered = (root + 2 * block) * compute_bytes + int(block * trained_share) * 4
    return sharded + [MemoryItem(name="all-gathered", bytes=gathered,
                                 note=f"root {root / 1e6:.1f}M + 2 blocks of {block / 1e6:.1f}M parameters "
                                      f"x {compute_bytes} B, one block's gradients before reduce-scatter")]


def block_parameters(facts: ModelFacts) -> int:
    """Parameters of one transformer block (attention, MLP and two norms)."""
    kv_width = facts.num_key_value_heads * (facts.hidden_size // facts.num_attention_heads)
    hidden = facts.hidden_size
    return 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * facts.intermediate_size + 2 * hidden


def offloaded_bytes(facts: ModelFacts, work: Workload) -> int:
    """CPU memory that offload takes: every process's shards together (divide by the machines)."""
    unsharded = step_items(facts, replace(work, strategy="ddp", offload=False), work.checkpointing)
    return sum(item.bytes for item in unsharded if item.name in ("weights", "gradients", "optimizer"))


def _block_activation_elements(facts: ModelFacts, work: Workload, tokens: int) -> int:
    head_width = facts.hidden_size // facts.num_attention_heads
    kv_width = facts.num_key_value_heads * head_width
    per_token = (ACT_PER_HIDDEN * facts.hidden_size + ACT_PER_INTERMEDIATE * facts.intermediate_size
                 + ACT_PER_KV * kv_width)
    elements = tokens * per_token
    if work.padded:  # see Workload.padded: keys and values repeated to every query head, and the mask
        length = work.seq_len + work.generation_tokens
        repeated = 2 * (facts.num_attention_heads - facts.num_key_value_heads) * head_width
        elements += tokens * repeated + (tokens // max(length, 1)) * length * length
    return elements


def advice(facts: ModelFacts, work: Workload, budget_bytes: int) -> list[str]:
    """What to change, each with the estimate it would give."""
    hints = []

    def option(text: str, changed: Workload) -> None:
        size = total_bytes(facts, changed)
        hints.append(f"{text}: {size / GIB:.1f} GiB" + (" (fits)" if size <= budget_bytes else ""))

    if not work.checkpointing:
        option("hardware.gradient_checkpointing: true", replace(work, checkpointing=True))
    if work.micro_batch > 1:
        option("training.micro_batch_size: 1", replace(work, micro_batch=1, checkpointing=True))
    if work.mode != "lora":
        adapters = int(0.01 * facts.total_parameters)
        option("trainable.mode: lora (about 1% of the parameters)",
               replace(work, mode="lora", trainable_parameters=adapters, checkpointing=True, micro_batch=1))
    if work.seq_len > 512:
        option("training.max_length: 512", replace(work, seq_len=512, checkpointing=True, micro_batch=1))
    return hints
