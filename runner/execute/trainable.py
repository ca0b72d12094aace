"""Apply the plan's trainable selection to the real model, and prove afterwards what changed.

The selection is recomputed on the real model's parameter names with the very function
the planner used (runner.trainable.select) and must equal the plan's; then every
parameter is fingerprinted, and after training compared bit for bit.
"""

from __future__ import annotations

import hashlib

import torch

from runner import trainable
from runner.errors import RunnerError
from runner.manifest import ParameterChanges
from runner.methods import registry
from runner.plan.models import Plan
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
                        target_modules=lora.targets, modules_to_save=trained_modules or None, bias="none")
    return get_peft_model(model, config)


def base_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The base model's parameters by name, captured before any adapter wraps them."""
    return dict(model.named_parameters())


def fingerprints(parameters: dict[str, torch.Tensor]) -> dict[str, str]:
    return {name: _fingerprint(tensor) for name, tensor in parameters.items()}


def _fingerprint(tensor: torch.Tensor) -> str:
    raw = tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(raw)).hexdigest()


def live_parameters(model, base: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """The tensors that now hold each base parameter's values: the trained copy for modules that
    PEFT wraps in `modules_to_save`, the original parameter otherwise."""
    live = dict(base)
    if not hasattr(model, "peft_config"):
        return live
    for module_name, module in model.named_modules():
        copies = getattr(module, "modules_to_save", None)
        if copies is None or "default" not in copies:
            continue
        original = module_name.split("base_model.model.", 1)[-1]
        for parameter_name, parameter in copies["default"].named_parameters():
            key = f"{original}.{parameter_name}"
            if key in live:
                live[key] = parameter
    return live


def compare(before: dict[str, str], model, base: dict[str, torch.nn.Parameter], plan: Plan) -> ParameterChanges:
    after = fingerprints(live_parameters(model, base))
    changed = sorted(name for name in before if after[name] != before[name])
    planned = set(plan.trainable.trained)
    adapters = 0
    if plan.trainable.lora:
        adapters = sum(1 for name, p in model.named_parameters() if "lora_B" in name and bool(p.detach().any()))
    return ParameterChanges(changed=changed, planned_unchanged=sorted(planned - set(changed)),
                            unexpected=sorted(set(changed) - planned), adapters_changed=adapters)
