"""Rules that relate several fields of a spec.

Each rule looks at the sections that validated on their own, so a spec with a bad
`training` section still gets its `trainable` rules checked: every mistake at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import json

from pydantic import ValidationError

from runner.methods import registry
from runner.spec.models import SECTIONS, JobSpec, Section
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
        return method if isinstance(method, str) and method in registry.names() else None

    def given(self, name: str) -> bool:
        return name in self.raw

    @classmethod
    def of_spec(cls, raw: dict[str, Any], spec: JobSpec) -> SpecView:
        given = {name: getattr(spec, name) for name in (*SECTIONS, spec.method)}
        return cls(raw, {name: section for name, section in given.items() if section is not None})

    @classmethod
    def of(cls, raw: dict[str, Any], broken: set[str]) -> SpecView:
        """Validate each section on its own (the slow path, for specs with errors)."""
        view = cls(raw)
        method = {view.method: registry.get(view.method).section} if view.method else {}
        for name, model in {**SECTIONS, **method}.items():
            if name in broken:
                continue
            value = raw.get(name)
            if value is None and name in ("base_model", "data", *method):
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


def quantized_base_trains_adapters(view: SpecView) -> Iterator[Problem]:
    """A quantised base is frozen storage (bitsandbytes' weights take no gradient): only LoRA trains on it,
    4-bit settings go with 4 bits, a GGUF file is quantised twice only when the spec says so, and merging
    happens after the run (the merged model needs the dequantised base, bigger than what trained)."""
    trainable = view.sections.get("trainable")
    quantize = trainable.quantize if trainable else None
    if quantize is None:
        return
    if trainable.mode != "lora":
        yield Problem(("trainable", "quantize"), f"a quantized base cannot be trained in mode {trainable.mode}: its "
                      "weights are frozen storage and take no gradient",
                      hint="set mode: lora (QLoRA trains adapters on the quantized base), or remove quantize",
                      at_key=True)
    written = view.raw.get("trainable", {}).get("quantize")
    if quantize.bits == 8 and isinstance(written, dict):
        for key in ("type", "double_quant", "compute_dtype"):
            if key in written:
                yield Problem(("trainable", "quantize", key), f"'{key}' applies to 4-bit storage; 8-bit LLM.int8 "
                              "has none", hint="remove it, or set bits: 4", at_key=True)
    base = view.sections.get("base_model")
    if base is not None and base.path is not None and base.path.lower().endswith(".gguf") \
            and not quantize.requantize_gguf:
        yield Problem(("trainable", "quantize"), f"{base.path} is a GGUF file, already quantised in its own "
                      f"format: {quantize.bits}-bit storage dequantises it to fp32 first, then quantises it again",
                      hint="set quantize.requantize_gguf: true to accept the second rounding, or start from the "
                           "model's safetensors weights")
    outputs = view.sections.get("outputs")
    if outputs is not None and outputs.save == "merged":
        yield Problem(("outputs", "save"), "save: merged with a quantized base: merging needs the base "
                      "dequantised, larger than what trains", hint="keep save: adapter (or auto); after the run, "
                      "`runner export RUN` merges it into the dequantised base on the CPU")


def sections_match_method(view: SpecView) -> Iterator[Problem]:
    method = view.method
    if method is None:
        return
    for name in registry.names():
        if name != method and view.given(name):
            yield Problem((name,), f"a '{name}' section applies to method {name}; this spec's method is {method}",
                          hint=f"remove the '{name}' section, or set method: {name}", at_key=True)
    descriptor = registry.get(method)
    required = descriptor.required_fields()
    if required and not view.given(method):
        keys = ", ".join(f"'{key}'" for key in required)
        yield Problem(("method",), f"method {method} needs a '{method}' section with {keys}",
                      hint=descriptor.section_hint)


def data_format_suits_method(view: SpecView) -> Iterator[Problem]:
    data, method = view.sections.get("data"), view.method
    if not data or not method or data.format == "auto":
        return
    descriptor = registry.get(method)
    if data.format not in descriptor.formats:
        example = json.dumps(descriptor.example_row)
        yield Problem(("data", "format"), f"method {method} cannot train on {data.format} rows",
                      hint=f"{method} takes {', '.join(descriptor.formats)}, e.g. {example}")


def weights_mix_training_data(view: SpecView) -> Iterator[Problem]:
    data = view.sections.get("data")
    if not data or data.eval is None:
        return
    listed = isinstance(view.raw.get("data", {}).get("eval"), list)
    for index, source in enumerate(data.eval):
        if source.weight != 1:
            yield Problem(("data", "eval", *([index] if listed else []), "weight"),
                          "weight mixes training data; every eval row is used once",
                          hint="remove weight from the eval source", at_key=True)


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


def method_rules(view: SpecView) -> Iterator[Problem]:
    """The method's own rules (its descriptor's), on the spec's values: `auto` ones are checked at planning."""
    method, training, trainable = view.method, view.sections.get("training"), view.sections.get("trainable")
    if method is None or training is None or trainable is None:
        return
    descriptor = registry.get(method)
    section = view.sections.get(method) or descriptor.default_section()
    if section is None:  # a required section is missing: sections_match_method says so
        return
    hardware = view.sections.get("hardware")
    devices = hardware.gpus if hardware and hardware.gpus != "auto" else 1
    batching = registry.Batching(trainable.mode, training.batch_size, training.micro_batch_size, devices)
    for finding in descriptor.problems(section, batching):
        yield Problem(finding.path, finding.message, finding.hint)


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
    quantized_base_trains_adapters,
    sections_match_method,
    data_format_suits_method,
    weights_mix_training_data,
    batch_arithmetic,
    method_rules,
    precision_suits_device,
    sharding_settings_agree,
    remote_code_is_flagged,
)


def check(view: SpecView) -> list[Problem]:
    return [problem for rule in RULES for problem in rule(view)]
