"""Memory estimate per device: arithmetic on the model's shape, no torch.

The executor keeps master weights in fp32 and computes in bf16/fp16 through autocast
(full and freeze modes); with LoRA the frozen base is stored in the compute dtype and
only the adapters are fp32. AdamW keeps two fp32 states per trained parameter.

Activations are counted per token and per block that the backward pass reaches: blocks
below the lowest trained one keep nothing when nothing under them is trained. The
per-token constants were fitted against measured peaks (bench/memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from runner.methods.registry import ExtraModel
from runner.plan.models import MemoryEstimate, MemoryItem, ModelFacts

GIB = 1024**3
# Saved activation elements per token and block, in units of the hidden size, the MLP
# width and the key/value width (norm inputs and outputs, q/k/v/o, gate/up/act/product...).
ACT_PER_HIDDEN = 12
ACT_PER_INTERMEDIATE = 4
ACT_PER_KV = 4
CUDA_CONTEXT_BYTES = int(0.6 * GIB)
"""CUDA context and kernels: counted by nvidia-smi, not by the allocator."""
CPU_RUNTIME_BYTES = int(0.9 * GIB)
"""The Python process with torch, transformers and TRL imported."""


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
    strategy: str = "ddp"
    """ddp: every process holds the whole model; fsdp: weights, gradients and optimizer states are
    sharded over `devices` processes and each block is all-gathered when it runs."""
    devices: int = 1
    offload: bool = False
    """fsdp: the shards live in CPU memory; the device holds only the all-gathered blocks."""


def estimate(facts: ModelFacts, work: Workload, budget_bytes: int, budget_source: str) -> MemoryEstimate:
    items = _items(facts, work, work.checkpointing)
    total = sum(item.bytes for item in items)
    without = total if not work.checkpointing else sum(i.bytes for i in _items(facts, work, False))
    with_ckpt = total if work.checkpointing else sum(i.bytes for i in _items(facts, work, True))
    fits = total <= budget_bytes
    return MemoryEstimate(items=items, total_bytes=total, without_checkpointing_bytes=without,
                          with_checkpointing_bytes=with_ckpt, budget_bytes=budget_bytes,
                          budget_source=budget_source, fits=fits,
                          advice=[] if fits else advice(facts, work, budget_bytes))


def total_bytes(facts: ModelFacts, work: Workload) -> int:
    return sum(item.bytes for item in _items(facts, work, work.checkpointing))


def _items(facts: ModelFacts, work: Workload, checkpointing: bool) -> list[MemoryItem]:
    half = work.precision in ("bf16", "fp16")
    act_bytes = 2 if half else 4
    params = facts.total_parameters
    adapter_only = work.mode == "lora"
    base_bytes = 2 if (adapter_only and half) else 4
    weights = params * base_bytes + (work.trainable_parameters * 4 if adapter_only else 0)
    items = [
        MemoryItem(name="weights", bytes=weights,
                   note=f"{params / 1e6:.1f}M x {base_bytes} B" + (" + adapters in fp32" if adapter_only else "")),
        MemoryItem(name="gradients", bytes=work.trainable_parameters * 4, note="fp32, trained parameters only"),
        MemoryItem(name="optimizer", bytes=work.trainable_parameters * 8, note="AdamW: two fp32 states"),
    ]
    if work.strategy == "fsdp":
        items = _sharded(items, facts, work, half)
    sequences = work.micro_batch * work.sequences_per_row
    tokens = sequences * (work.seq_len + work.generation_tokens)
    kept = 0 if work.lowest_trained_layer is None else facts.num_layers - work.lowest_trained_layer
    adapters = tokens * work.adapter_inputs * (act_bytes + 1) if work.adapter_dropout else 0
    per_block = _block_activation_elements(facts, work, tokens) * act_bytes
    if checkpointing and kept:
        activations = kept * tokens * facts.hidden_size * act_bytes + per_block + adapters // max(kept, 1)
        note = f"checkpointed: block inputs of {kept} blocks + one block recomputed"
    else:
        activations = kept * per_block + adapters
        note = f"{kept} of {facts.num_layers} blocks keep activations for the backward pass"
        note += "; LoRA dropout copies each adapted input" if adapters else ""
    items.append(MemoryItem(name="activations", bytes=activations, note=note))
    if work.logits:
        logits = tokens * facts.vocab_size * (act_bytes + 8)
        items.append(MemoryItem(name="logits", bytes=logits, note="logits, fp32 copy for the loss, and its gradient"))
    items.extend(work.extra_models)
    if work.generation_tokens:
        kv_width = facts.num_key_value_heads * (facts.hidden_size // facts.num_attention_heads)
        sampled = work.rollout_sequences * (work.seq_len + work.generation_tokens)
        cache = 2 * facts.num_layers * kv_width * sampled * act_bytes
        items.append(MemoryItem(name="generation cache", bytes=cache,
                                note=f"keys and values of the {work.rollout_sequences} sequences sampled at once"))
    runtime = CUDA_CONTEXT_BYTES if work.device == "cuda" else CPU_RUNTIME_BYTES
    items.append(MemoryItem(name="runtime", bytes=runtime,
                            note="CUDA context" if work.device == "cuda" else "Python, torch and libraries"))
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
    unsharded = _items(facts, replace(work, strategy="ddp", offload=False), work.checkpointing)
    return sum(item.bytes for item in unsharded if item.name in ("weights", "gradients", "optimizer"))


def _block_activation_elements(facts: ModelFacts, work: Workload, tokens: int) -> int:
    kv_width = facts.num_key_value_heads * (facts.hidden_size // facts.num_attention_heads)
    per_token = (ACT_PER_HIDDEN * facts.hidden_size + ACT_PER_INTERMEDIATE * facts.intermediate_size
                 + ACT_PER_KV * kv_width)
    elements = tokens * per_token
    if work.device == "cpu":  # sdpa's math path keeps the attention probabilities
        length = work.seq_len + work.generation_tokens
        elements += 2 * (tokens // max(length, 1)) * facts.num_attention_heads * length * length
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
