"""A reward source as the spec names it, loaded for the RL recipes (PPO, GRPO): a reward model, or a
Python function. `runner validate` finds the same function file through `RewardSource.function_file`."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.execute import loading
from runner.methods.registry import SCORE
from runner.plan.models import Plan
from runner.spec.fields import RewardSource


@dataclass(frozen=True)
class Reward:
    """Exactly one of: a frozen reward model (score head, fp32, read at the last real token), or a function
    (prompts, completions) -> one float each."""

    model: object | None = None
    function: Callable | None = None


def load_reward(plan: Plan, source: RewardSource, tokenizer, device: torch.device) -> Reward:
    if source.model is not None:
        model = loading.load_model(loading.location_of(plan, plan.inputs.reward_model), SCORE, torch.float32,
                                   pad_token_id=tokenizer.pad_token_id)
        return Reward(model=model.requires_grad_(False).eval().to(device))
    return Reward(function=load_function(source, plan.inputs.spec_folder))


def load_function(source: RewardSource, spec_folder: Path) -> Callable:
    """`module:function`: a module file beside the spec (loaded from there, under a private name, so two
    specs' `rewards.py` never collide), else an installed module. This runs that code."""
    module_name, function_name = source.function.split(":")
    beside = source.function_file(spec_folder)
    if beside is not None:
        loader_spec = importlib.util.spec_from_file_location(f"runner_reward_{abs(hash(beside))}", beside)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RunnerError(f"{source.function}: {module_name} has no function {function_name}")
    return function
