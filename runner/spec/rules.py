"""Rules that relate several fields of a spec.

Each rule looks at the sections that validated on their own, so a spec with a bad
`training` section still gets its `trainable` rules checked: every mistake at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from runner import formats
from pydantic import ValidationError

from runner.spec.models import METHODS, SECTION_MODELS, SECTIONS, JobSpec, Section
from runner.spec.yamlpos import FieldPath


@dataclass(frozen=True)
class Problem:
    path: FieldPath
    message: str
    hint: str | None = None
    severity: str = "error"
    at_key: bool = False
    """Point at the key (the key should not be there) rather than at its value."""


@dataclass
class SpecView:
    """The sections of a spec that are valid on their own, with defaults for omitted ones."""

    raw: dict[str, Any]
    sections: dict[str, Section] = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        method = self.raw.get("method")
        return method if method in METHODS else None

    def given(self, name: str) -> bool:
        return name in self.raw

    @classmethod
    def of_spec(cls, raw: dict[str, Any], spec: JobSpec) -> SpecView:
        return cls(raw, {name: getattr(spec, name) for name in SECTIONS if getattr(spec, name) is not None})

    @classmethod
    def of(cls, raw: dict[str, Any], broken: set[str]) -> SpecView:
        """Validate each section on its own (the slow path, for specs with errors)."""
        view = cls(raw)
        for name, model in SECTIONS.items():
            if name in broken:
                continue
            value = raw.get(name)
            if value is None and name in ("base_model", "data", *SECTION_MODELS):
                continue
            try:
                view.sections[name] = model.model_validate(value if value is not None else {})
            except ValidationError:  # reported by the whole spec's validation already
                continue
        return view


Rule = Callable[[SpecView], Iterator[Problem]]


def full_mode_takes_no_selection(view: SpecView) -> Iterator[Problem]:
    trainable = view.sections.get("trainable")
    if not trainable or trainable.mode != "full":
        return
    for key in ("layers", "modules", "also"):
        if key in view.raw.get("trainable", {}):
            yield Problem(("trainable", key), f"mode: full trains every parameter; '{key}' selects nothing",
                          hint="use mode: freeze (train the selection) or mode: lora (adapters on it)",
                          at_key=True)


def lora_settings_need_lora_mode(view: SpecView) -> Iterator[Problem]:
    trainable = view.sections.get("trainable")
    if trainable and trainable.lora is not None and trainable.mode != "lora":
        yield Problem(("trainable", "lora"), f"LoRA settings given, but mode is {trainable.mode}",
                      hint="set trainable.mode: lora, or remove the lora block", at_key=True)


def saved_form_matches_mode(view: SpecView) -> Iterator[Problem]:
    trainable, outputs = view.sections.get("trainable"), view.sections.get("outputs")
    if trainable and outputs and outputs.save in ("adapter", "merged") and trainable.mode != "lora":
        yield Problem(("outputs", "save"), f"save: {outputs.save} needs trainable.mode: lora",
                      hint="use save: full (or auto) for full and freeze training")


def sections_match_method(view: SpecView) -> Iterator[Problem]:
    method = view.method
    if method is None:
        return
    for name in SECTION_MODELS:
        if name != method and view.given(name):
            yield Problem((name,), f"a '{name}' section applies to method {name}; this spec's method is {method}",
                          hint=f"remove the '{name}' section, or set method: {name}", at_key=True)
    if method in ("ppo", "grpo") and not view.given(method):
        yield Problem(("method",), f"method {method} needs a '{method}' section with a reward source",
                      hint=f"add  {method}: {{reward: {{model: {{job: my-reward-model}}}}}}  "
                           "or  {reward: {function: my_module:score}}")


def data_format_suits_method(view: SpecView) -> Iterator[Problem]:
    data, method = view.sections.get("data"), view.method
    if not data or not method or data.format == "auto":
        return
    allowed = formats.FORMATS_FOR_METHOD[method]
    if data.format not in allowed:
        yield Problem(("data", "format"), f"method {method} cannot train on {data.format} rows",
                      hint=f"{method} takes {', '.join(allowed)}")


def batch_arithmetic(view: SpecView) -> Iterator[Problem]:
    training, hardware = view.sections.get("training"), view.sections.get("hardware")
    if not training:
        return
    batch, micro = training.batch_size, training.micro_batch_size
    gpus = hardware.gpus if hardware and hardware.gpus != "auto" else 1
    devices = gpus * (hardware.nodes if hardware else 1)
    if batch != "auto" and micro != "auto" and batch % (micro * devices):
        yield Problem(("training", "batch_size"),
                      f"batch_size {batch} is not a multiple of micro_batch_size {micro} x {devices} device(s)",
                      hint=f"use a batch_size of {max(1, round(batch / (micro * devices))) * micro * devices}")
    if training.max_steps is not None and training.epochs != "auto":
        yield Problem(("training", "max_steps"), "give epochs or max_steps, not both",
                      hint="max_steps stops training at a step count; epochs counts passes over the data")
    if batch == "auto":
        return
    ppo, grpo = view.sections.get("ppo"), view.sections.get("grpo")
    if view.method == "ppo" and ppo and batch % ppo.num_mini_batches:
        yield Problem(("ppo", "num_mini_batches"),
                      f"num_mini_batches {ppo.num_mini_batches} does not divide batch_size {batch}")
    if view.method == "grpo" and grpo and batch % grpo.num_generations:
        yield Problem(("grpo", "num_generations"),
                      f"num_generations {grpo.num_generations} does not divide batch_size {batch}",
                      hint="a batch holds whole groups of completions of one prompt")


def precision_suits_device(view: SpecView) -> Iterator[Problem]:
    hardware = view.sections.get("hardware")
    if hardware and hardware.device == "cpu" and hardware.precision == "fp16":
        yield Problem(("hardware", "precision"), "fp16 training is not supported on the CPU",
                      hint="use bf16 or fp32 (or auto)")


def sharding_settings_agree(view: SpecView) -> Iterator[Problem]:
    hardware = view.sections.get("hardware")
    if not hardware or hardware.offload is not True:
        return
    if hardware.strategy == "ddp":
        yield Problem(("hardware", "offload"), "offload moves fsdp's shards to CPU memory; ddp has none",
                      hint="set strategy: fsdp (or auto), or remove offload")
    if hardware.device == "cpu":
        yield Problem(("hardware", "offload"), "offload moves GPU memory to the CPU; this job runs on the CPU",
                      hint="remove offload, or use device: cuda")


def shared_value_model_needs_lora(view: SpecView) -> Iterator[Problem]:
    ppo, trainable = view.sections.get("ppo"), view.sections.get("trainable")
    if ppo and trainable and ppo.value_model == "shared" and trainable.mode != "lora":
        yield Problem(("ppo", "value_model"), "a shared value model is a second LoRA adapter",
                      hint="set trainable.mode: lora, or value_model: separate")


def remote_code_is_flagged(view: SpecView) -> Iterator[Problem]:
    base = view.sections.get("base_model")
    if base and base.trust_remote_code:
        yield Problem(("base_model", "trust_remote_code"),
                      "trust_remote_code runs Python code from the model repository", severity="warning",
                      hint="keep it only for a repository you trust, pinned with revision")


RULES: tuple[Rule, ...] = (
    full_mode_takes_no_selection,
    lora_settings_need_lora_mode,
    saved_form_matches_mode,
    sections_match_method,
    data_format_suits_method,
    batch_arithmetic,
    precision_suits_device,
    sharding_settings_agree,
    shared_value_model_needs_lora,
    remote_code_is_flagged,
)


def check(view: SpecView) -> list[Problem]:
    return [problem for rule in RULES for problem in rule(view)]
