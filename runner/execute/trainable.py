"""Apply the plan's trainable selection to the real model, and prove afterwards what changed.

The selection is recomputed on the real model's parameter names with the very function
the planner used (runner.trainable.select) and must equal the plan's; then every
parameter is fingerprinted, and after training compared bit for bit. Under FSDP each
process fingerprints the slices it holds and the digests are combined per parameter, so
the proof covers every byte without gathering the model.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch

from runner import trainable
from runner.errors import RunnerError
from runner.manifest import ParameterChanges
from runner.methods import registry
from runner.plan.models import LoraPlan, Plan
from runner.plan.skeleton import tied_parameters


class IntegrityError(RunnerError):
    """What is trained differs from what the plan says."""


def apply(model, plan: Plan):
    """Freeze what the plan freezes; add LoRA adapters where it says. Returns the model to train."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    selection = trainable.select(shapes, plan.trainable_policy(), num_layers=plan.model.num_layers,
                                 tied=tied_parameters(model), new=registry.get(plan.method).new_heads)
    lora = plan.trainable.lora
    if list(selection.trained) != plan.trainable.trained or (lora and list(selection.lora_targets) != lora.targets):
        raise IntegrityError("the loaded model's parameters do not match the plan's trainable selection",
                             "the model changed since planning; make a new plan")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in selection.trained)
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    trained_modules = sorted({name.rsplit(".", 1)[0] for name in selection.trained})
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_rslora=lora.rslora,
                        use_dora=lora.dora, target_modules=lora.targets, modules_to_save=trained_modules or None,
                        bias="none")
    wrapped = get_peft_model(model, config)
    initialise_adapters(wrapped, plan.value("training.seed"))
    return wrapped


def optimizer(model, lora: LoraPlan | None, learning_rate: float, weight_decay: float = 0.0, *, extra=(),
              **adamw):
    """AdamW over the model's trained parameters (and `extra` ones, at the same rate). With LoRA+, PEFT's
    groups: B matrices and one-dimensional trained weights at loraplus_lr_ratio x the learning rate; a
    schedule scales every group's rate alike, so the ratio holds throughout."""
    if lora is None or not lora.loraplus_lr_ratio:
        trained = [p for p in model.parameters() if p.requires_grad] + list(extra)
        return torch.optim.AdamW(trained, lr=learning_rate, weight_decay=weight_decay, **adamw)
    from peft.optimizers import create_loraplus_optimizer

    built = create_loraplus_optimizer(model, torch.optim.AdamW, lr=learning_rate,
                                      loraplus_lr_ratio=lora.loraplus_lr_ratio, loraplus_weight_decay=weight_decay,
                                      **adamw)
    if extra:
        built.add_param_group({"params": list(extra), "lr": learning_rate, "weight_decay": weight_decay})
    return built


def initialise_adapters(model, seed: int) -> None:
    """LoRA's starting values as PEFT's default makes them (A Kaiming-uniform, B zero), drawn from a
    generator seeded by the seed and each adapter's name: the same adapters however the model is
    built or sharded. Sharded adapters take their slice of the full value."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_A." not in name and ".lora_B." not in name:
                continue
            full = torch.zeros(parameter.shape, dtype=torch.float32)
            if ".lora_A." in name:
                bound = 1 / math.sqrt(parameter.shape[1])  # kaiming_uniform_(a=sqrt(5)), nn.Linear's default
                full.uniform_(-bound, bound, generator=torch.Generator().manual_seed(seed + zlib.crc32(name.encode())))
            if isinstance(parameter, DTensor):
                full = distribute_tensor(full.to(parameter.device), parameter.device_mesh, parameter.placements,
                                         src_data_rank=None)
            parameter.copy_(full)


def source_name(name: str) -> str | None:
    """The base model's name of the weight a parameter of the (possibly PEFT-wrapped) model starts
    from: a wrapped layer's, or a module copy's original; None for an adapter."""
    if ".lora_" in name:
        return None
    return (name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            .replace(".modules_to_save.default.", ".").replace(".original_module.", "."))


def base_name(name: str) -> str | None:
    """The base model's name of the parameter that holds a base weight's current value (for a
    module PEFT trains a copy of, the copy); None for adapters and the frozen originals."""
    return None if ".original_module." in name else source_name(name)


def fingerprints(model) -> dict[str, str]:
    """sha256 of every base-model parameter's current value (for a module PEFT trains a copy of, the
    copy), by base name. Sharded parameters: the digest of the slices' digests in process order;
    every process calls this and gets the same answer."""
    from torch.distributed.tensor import DTensor

    local = {base: _fingerprint(parameter.to_local() if isinstance(parameter, DTensor) else parameter)
             for name, parameter in model.named_parameters() if (base := base_name(name)) is not None}
    sharded = any(isinstance(parameter, DTensor) for parameter in model.parameters())
    if not sharded:
        return local
    import torch.distributed as dist

    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, local)
    return {name: hashlib.sha256("".join(part[name] for part in every).encode()).hexdigest() for name in local}


def _fingerprint(tensor: torch.Tensor) -> str:
    """The bytes of a tensor; for a weight stored quantized, its codes and its quantization constants."""
    digest = hashlib.sha256()
    for part in (tensor, *_quantization_constants(tensor)):
        digest.update(memoryview(part.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy()))
    return digest.hexdigest()


def _quantization_constants(parameter) -> list[torch.Tensor]:
    """bitsandbytes keeps a 4-bit weight's block scales (and their own scales) in its quant_state, an 8-bit
    weight's row scales in SCB: part of the weight's value, so part of its fingerprint."""
    state = getattr(parameter, "quant_state", None)
    constants = [value for _, value in sorted(state.as_dict(packed=True).items())
                 if isinstance(value, torch.Tensor)] if state is not None else []
    scales = getattr(parameter, "SCB", None)
    return constants + ([scales] if isinstance(scales, torch.Tensor) else [])


def adapters_changed(model) -> int:
    """LoRA B matrices that are no longer zero (they start at zero); every process of a sharded
    model calls this."""
    from torch.distributed.tensor import DTensor

    flags = [bool(parameter.to_local().any()) if isinstance(parameter, DTensor) else bool(parameter.any())
             for name, parameter in model.named_parameters() if ".lora_B." in name]
    if flags and any(isinstance(parameter, DTensor) for parameter in model.parameters()):
        import torch.distributed as dist

        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, flags)
        flags = [any(column) for column in zip(*every)]
    return sum(flags)


def compare(before: dict[str, str], after: dict[str, str], adapters: int, plan: Plan) -> ParameterChanges:
    changed = sorted(name for name in before if after.get(name) != before[name])
    planned = set(plan.trainable.trained)
    return ParameterChanges(changed=changed, planned_unchanged=sorted(planned - set(changed)),
                            unexpected=sorted(set(changed) - planned), adapters_changed=adapters)
