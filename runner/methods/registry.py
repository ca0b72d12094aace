"""The method registry: one torch-free descriptor per method, found in runner/methods/descriptors/.

A method is its descriptor (`runner/methods/descriptors/<name>.py`: the spec section, a `DESCRIPTOR`,
and the method's own rules), its recipe (`runner/methods/<name>.py`: `train(ctx)`, imported only when a
run starts) and an example spec. The spec's method choices and sections, the accepted data formats, the
model head, the memory terms, the loss-mask rule and preview, the default learning rates and the recipe
are all read from the descriptor: nothing else compares a method's name (a test checks).

Descriptors import neither torch nor TRL: `runner validate` reads them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from runner.errors import RunnerError

Head = Literal["causal_lm", "score"]
"""Model heads: next-token logits, or one scalar per sequence (a reward model)."""
CAUSAL_LM: Head = "causal_lm"
SCORE: Head = "score"

RowKind = Literal["supervised", "pairs", "unpaired", "prompts"]
"""How rows become examples (runner/encoding/rows.py): tokens with a loss mask; chosen and rejected
answers to one prompt; single answers labelled desirable or not; prompts that the policy answers."""
SUPERVISED: RowKind = "supervised"
PAIRS: RowKind = "pairs"
UNPAIRED: RowKind = "unpaired"
PROMPTS: RowKind = "prompts"


@dataclass(frozen=True)
class ExtraModel:
    """A model a method holds in memory beside the policy."""

    name: str
    parameters_of: Literal["policy", "reward_model", "teacher"]
    """Whose size it has: the policy's, the reward model's or the teacher's."""
    trained: bool = False
    """Frozen: fp32 weights. Trained: fp32 weights, gradients and two AdamW states."""
    note: str = ""


REFERENCE = ExtraModel("reference model", "policy", note="frozen fp32 copy of the base")
VALUE = ExtraModel("value model", "policy", trained=True, note="weights, gradients and AdamW states")
REWARD = ExtraModel("reward model", "reward_model", note="frozen, fp32 (as the recipes load it)")
TEACHER = ExtraModel("teacher model", "teacher", note="frozen, fp32 (as the distillation recipe loads it)")


@dataclass(frozen=True)
class MemoryTerms:
    """What a method adds to a plain forward and backward pass over its rows."""

    sequences_per_row: int = 1
    """Sequences run with gradients per row: 2 for a chosen and a rejected answer."""
    logits: bool = True
    """Whether vocabulary logits are computed (a score head has none)."""
    generated_tokens: int = 0
    """Tokens sampled after each prompt (RL)."""
    models: tuple[ExtraModel, ...] = ()


@dataclass(frozen=True)
class Batching:
    """What a method's own checks look at: the spec's values in the validator (a number or `auto`), the
    resolved ones in the planner and the recipe."""

    mode: str
    """Trainable mode: full | freeze | lora."""
    batch: int | str
    micro: int | str
    devices: int


@dataclass(frozen=True)
class Finding:
    """A broken method rule: the field path it concerns, what is wrong and what to do."""

    path: tuple[str, ...]
    message: str
    hint: str | None = None


Check = Callable[[Any, Batching], Iterator[Finding]]
"""A method's own rule: (its section, the batching) -> what is wrong."""


@dataclass(frozen=True)
class Option:
    """A method option as the plan lists it: its value, its documented default, and where the value comes
    from (the paper that introduced it)."""

    name: str
    value: Any
    default: Any
    origin: str


def no_options(section: Any) -> list[Option]:
    return []


def options_of(section: Any, origins: Mapping[str, str]) -> list[Option]:
    """The options named in `origins` ({field: origin}), with the section's values and the model's defaults."""
    fields = type(section).model_fields
    return [Option(name, getattr(section, name), fields[name].get_default(call_default_factory=True), origin)
            for name, origin in origins.items()]


def no_extra_memory(section: Any, mode: str) -> MemoryTerms:
    return MemoryTerms()


def unless_lora(mode: str) -> tuple[ExtraModel, ...]:
    """A frozen reference copy of the base, except under LoRA: there the base with the adapter switched
    off is the reference."""
    return () if mode == "lora" else (REFERENCE,)


def one(section: Any) -> int:
    return 1


def nothing(section: Any) -> None:
    return None


def nothing_to_resolve(section: Any, mode: str) -> dict[str, tuple[Any, str]]:
    return {}


@dataclass(frozen=True)
class MethodDescriptor:
    name: str
    summary: str
    """One line: what the method trains on and towards (the `method` field's documentation)."""
    section: type
    """The spec section's model (a `runner.spec.fields.Section`), named after the method."""
    formats: tuple[str, ...]
    """Data formats it trains on (runner.formats)."""
    rows: RowKind
    """How a row becomes an example."""
    example_row: Mapping[str, Any]
    """One row of its data, for hints and documentation."""
    objective: str
    """The loss, in words, as the plan shows it."""
    mask_rule: str | Mapping[str, str]
    """Which tokens the loss covers, in words (by data format where that differs); `{wrapped}` marks where
    the chat-template note goes."""
    learning_rates: Mapping[str, float]
    """Default peak learning rate per trainable mode (full, freeze, lora)."""
    training_path: str
    """Which implementation runs it, as the plan shows it."""
    recipe: str
    """Dotted module path of the recipe (`train(ctx)`), imported when a run starts."""
    head: Head = CAUSAL_LM
    new_heads: tuple[str, ...] = ()
    """Parameters the head adds to the base model; they start untrained, so they are always trained."""
    memory: Callable[[Any, str], MemoryTerms] = no_extra_memory
    """(section, trainable mode) -> memory terms, extra models included."""
    checks: tuple[Check, ...] = ()
    """The method's own rules, run by the validator, the planner and the recipe alike."""
    completions_per_prompt: Callable[[Any], int] = one
    """Completions sampled per prompt; above 1 the batch counts completions (GRPO)."""
    minibatches: Callable[[Any], int] = one
    """Optimizer steps per batch (PPO's minibatches); each minibatch is split into micro-batches."""
    episodes: Callable[[Any], int | None] = nothing
    """Prompts to train on in all, which then sets the step count (PPO's total_episodes)."""
    resolve: Callable[[Any, str], dict[str, tuple[Any, str]]] = nothing_to_resolve
    """(section, trainable mode) -> {field: (value, rule)} for the section's `auto` fields."""
    section_hint: str | None = None
    """How to write the section, for a spec whose method needs one and lacks it."""
    options: Callable[[Any], list[Option]] = no_options
    """(section) -> the options the plan lists with their defaults and the papers they come from."""
    min_micro_batch: int = 1
    """Rows a micro-batch needs at least (KTO compares rows within one)."""
    single_device: bool = False
    shards: bool = False
    """Whether the recipe trains under FSDP (runner's own loops can; TRL's trainers would load a full copy
    of the model in every process before sharding it)."""
    packing: bool = False
    """Whether the planner may pack rows into blocks (the section then has a `packing` field)."""
    generates: bool = True
    """Whether the trained model generates text (before/after samples, `runner sample`)."""
    runner_loop: bool = False
    """Whether the recipe is one of runner's own training loops (SFT's, PPO's), which checkpoint the trained
    tensors alone, rather than a TRL trainer (which imports TRL and saves the model with each checkpoint)."""
    dropout: bool = True
    """Whether dropout acts while training. TRL's preference and reward trainers set every dropout
    probability to 0 (their `disable_dropout` defaults to true), as runner's PPO does: LoRA's dropout then
    hands its input on as it is and keeps no copy of it."""

    def unsharded_reason(self) -> str | None:
        """Why this method cannot shard over devices (FSDP); None when it can."""
        if self.shards:
            return None
        if self.single_device:
            return f"{self.training_path} runs on one device"
        return f"{self.training_path} would load a full copy of the model in every process before sharding it"

    def rule_text(self, format_name: str) -> str:
        return self.mask_rule if isinstance(self.mask_rule, str) else self.mask_rule[format_name]

    def required_fields(self) -> list[str]:
        """Fields of the section without a default: a spec must then give the section."""
        return [name for name, info in self.section.model_fields.items() if info.is_required()]

    def default_section(self):
        """The section when the spec leaves it out, or None when it must be given."""
        return None if self.required_fields() else self.section()

    def load_recipe(self):
        """The recipe module; a missing one is a broken installation, said plainly."""
        try:
            module = importlib.import_module(self.recipe)
        except ModuleNotFoundError as error:
            raise RunnerError(f"method {self.name}: its recipe {self.recipe} cannot be imported ({error})",
                              "reinstall runner, or remove the method's descriptor") from None
        if not callable(getattr(module, "train", None)):
            raise RunnerError(f"method {self.name}: {self.recipe} has no train(ctx) function")
        return module

    def problems(self, section: Any, batching: Batching) -> list[Finding]:
        """Every broken rule of this method: the micro-batch minimum, then the method's own checks."""
        found = []
        micro, batch = batching.micro, batching.batch
        if micro != "auto" and micro < self.min_micro_batch:
            found.append(Finding(("training", "micro_batch_size"),
                                 f"method {self.name} needs micro-batches of at least {self.min_micro_batch} rows",
                                 f"set micro_batch_size: {self.min_micro_batch} or auto"))
        elif batch != "auto" and batch // batching.devices < self.min_micro_batch:
            found.append(Finding(("training", "batch_size"),
                                 f"method {self.name} needs at least {self.min_micro_batch} rows per device in a "
                                 f"batch; batch_size {batch} on {batching.devices} device(s) has fewer",
                                 f"use batch_size: {self.min_micro_batch * batching.devices} or more"))
        for check in self.checks:
            found.extend(check(section, batching))
        return found


@functools.cache
def names() -> tuple[str, ...]:
    """The registered methods: one module each in runner/methods/descriptors/. Listing them imports none:
    validating a spec reads its own method's descriptor only."""
    from runner.methods import descriptors

    return tuple(module_info.name for module_info in pkgutil.iter_modules(descriptors.__path__))


@functools.cache
def get(name: str) -> MethodDescriptor:
    """The descriptor of a registered method; any other name is a clear error, never a fallback."""
    if name not in names():
        raise RunnerError(f"method '{name}' is not registered in this runner",
                          f"registered methods: {', '.join(names())}; a plan made by another runner "
                          "version must be made again")
    from runner.methods import descriptors

    module = importlib.import_module(f"{descriptors.__name__}.{name}")
    descriptor = getattr(module, "DESCRIPTOR", None)
    if not isinstance(descriptor, MethodDescriptor) or descriptor.name != name:
        raise RunnerError(f"{module.__file__} defines no DESCRIPTOR named '{name}'",
                          "each module in runner/methods/descriptors/ describes the method it is named after")
    return descriptor


def descriptors() -> tuple[MethodDescriptor, ...]:
    """Every registered method's descriptor (this imports them all: the schema and the docs want them)."""
    return tuple(get(name) for name in names())


def forget() -> None:
    """List the descriptors folder and read its descriptors again (a test that adds a method file). Models
    made from the descriptors before (runner.spec.models' cached ones) keep the methods they were made with."""
    names.cache_clear()
    get.cache_clear()


def descriptor_modules() -> list:
    """The descriptor modules (for the field documentation read from their source)."""
    from runner.methods import descriptors

    return [importlib.import_module(f"{descriptors.__name__}.{name}") for name in names()]
