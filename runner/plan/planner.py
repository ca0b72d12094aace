"""Spec -> Plan: resolve every `auto`, build the trainable table, preview the loss mask,
count the steps, estimate memory and identify the inputs.

Reads top to bottom in the order the decisions depend on each other.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner import confine, quantization, trainable
from runner.data import mixing
from runner.data.files import RowAt
from runner.errors import RunnerError
from runner.formats import RowError
from runner.install import pip_install
from runner.methods import registry
from runner.methods.registry import Batching, MethodDescriptor
from runner.plan import disk, identity, memory, strategy, table
from runner.model import source
from runner.plan.evals import plan_evals
from runner.plan.machine import Machine, detect
from runner.plan.models import (DeviceFacts, LossMaskPreview, MethodOption, Plan, QuantizedBase, Resolved,
                                ResolvedSettings, RewardPlan, RewardTermPlan, Steps, TokenStats)
from runner.encoding.packing import WORTH_IT, Layouts, keeps_documents_apart, layouts
from runner.encoding.rows import KINDS, mask_rule
from runner.model.skeleton import Skeleton, build
from runner.encoding.tokens import RowEncoder
from runner.spec.check import SpecResult, check_spec
from runner.spec.datacheck import DataReport
from runner.spec.models import JobSpec, LoraSpec

MEASURED_ROWS = 20_000
PREVIEW_ROWS = 3
DEFAULT_BATCH = 8
MAX_AUTO_LENGTH = 2048
CHECKPOINT_MIN_STEPS = 50


class PlanError(RunnerError):
    """The spec is invalid, or cannot be planned on this machine; carries the diagnostics."""

    def __init__(self, message: str, hint: str | None = None, result: SpecResult | None = None):
        super().__init__(message, hint)
        self.result = result


@dataclass
class Resolutions:
    """The settings resolved so far, keyed by field path, each with the rule that chose it; the plan holds
    them as a typed record (ResolvedSettings), which refuses a key it does not declare."""

    entries: dict[str, Resolved] = field(default_factory=dict)

    def given(self, key: str, value: Any) -> Any:
        self.entries[key] = Resolved(value=value, rule="spec")
        return value

    def auto(self, key: str, value: Any, rule: str) -> Any:
        self.entries[key] = Resolved(value=value, rule=f"auto: {rule}")
        return value

    def pick(self, key: str, spec_value: Any, resolve) -> Any:
        """The spec's value, or (for `auto`) `resolve()` -> (value, rule)."""
        if spec_value != "auto":
            return self.given(key, spec_value)
        value, rule = resolve()
        return self.auto(key, value, rule)


def make_plan(spec_path: Path, *, run_root: Path, machine: Machine | None = None,
              spec_source: Path | None = None) -> Plan:
    """Plan the spec in `spec_path`; with `spec_source`, `spec_path` holds a copy of the spec there."""
    checked = check_spec(spec_path, source=spec_source)
    if checked.spec is None:
        raise PlanError(f"{spec_path} is invalid", f"run: runner validate {spec_path}", checked)
    spec, folder = checked.spec, (spec_source or spec_path).parent
    method = _Method(spec.descriptor(), spec.method_section())
    settings = Resolutions()
    machine = machine or detect()

    device = _resolve_device(spec, method, machine, settings)
    location = source.locate(spec.base_model, folder, run_root)
    reward_location = _reward_location(spec, folder, run_root)
    teacher_location = source.locate(spec.teacher_source(), folder, run_root) if spec.teacher_source() else None
    config = source.load_config(location)
    tokenizer = source.load_tokenizer(location)
    skeleton = build(config, method.descriptor.head)
    trainable_plan = _trainable(spec, method, skeleton, settings, location)

    use_chat = settings.pick("data.chat_template", spec.data.chat_template, lambda: _auto_chat_template(tokenizer))
    _require_rows_read(checked)
    train = checked.data["train"]
    rows = _read_rows(train, MEASURED_ROWS)
    max_length = settings.pick("training.max_length", spec.training.max_length,
                               lambda: _auto_max_length(tokenizer, use_chat, spec, method, rows, train.format, skeleton))
    encoder = RowEncoder(tokenizer, use_chat_template=use_chat, loss_on=spec.training.loss_on, max_length=max_length)
    stats, lengths, unusable = _token_stats(encoder, method, train.format, rows)
    terms = method.descriptor.memory(method.section, trainable_plan.mode)
    preview = _loss_mask_preview(encoder, spec, method, terms, train, rows)
    epoch_rows = _epoch_rows(spec, train, unusable)

    steps = _steps(spec, method, settings, device, sum(epoch_rows), stats, trainable_plan.mode,
                   "eval" in checked.data)
    packing = _resolve_packing(spec, method, settings, lengths, steps, max_length, config)
    teacher = build(source.load_config(teacher_location), registry.CAUSAL_LM).facts if teacher_location else None
    if teacher is not None and teacher.vocab_size != skeleton.facts.vocab_size:
        raise PlanError(f"the teacher has a vocabulary of {teacher.vocab_size:,} tokens, the student "
                        f"{skeleton.facts.vocab_size:,}: it cannot score the student's tokens",
                        "distil from a teacher of the same model family (the same tokenizer)")
    sizes = {"policy": skeleton.facts.total_parameters, "teacher": teacher.total_parameters if teacher else 0,
             "reward_model": _reward_parameters(reward_location) if reward_location else 0}
    checkpoint_every = _resolve_outputs(spec, settings, steps)
    kept = _Kept(data_tokens=_data_tokens(checked, steps, stats, terms), gguf_conversion=_converts_gguf(location))
    mem, work = _memory(spec, method, terms, settings, device, skeleton, trainable_plan, steps, max_length, packing,
                        sizes, kept)
    steps = steps.model_copy(update={"micro_batch_size": settings.entries["training.micro_batch_size"].value,
                                     "gradient_accumulation": settings.entries["training.gradient_accumulation"].value,
                                     "checkpoint_every": checkpoint_every})
    _record_method_settings(spec, method, settings)

    inputs = identity.inputs(spec_path, checked, location, reward_location, epoch_rows, teacher_location)
    written = disk.estimate(skeleton.facts, work, steps, spec.outputs.keep_checkpoints,
                            spec.outputs.keep_checkpoints_after_success, inputs.base_model)
    eval_plan = plan_evals(spec.evals, folder, tokenizer, use_chat, inputs.base_model, steps, spec.training.seed,
                           device.count) if spec.evals is not None and spec.evals.any() else None
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        name=spec.name, method=spec.method, spec=spec.model_dump(mode="json"),
        settings=ResolvedSettings.of_keys(settings.entries, method.name), device=device, model=skeleton.facts,
        trainable=trainable_plan,
        loss_mask=preview, steps=steps, memory=mem, disk=written, inputs=inputs,
        training_path=_training_path(method, settings), objective=method.descriptor.objective,
        reward=_reward_plan(spec),
        options=[MethodOption(**vars(option)) for option in method.descriptor.options(method.section)],
        evals=eval_plan, confinement=confine.active(),
    )


def _reward_plan(spec: JobSpec) -> RewardPlan | None:
    reward = spec.reward_source()
    if reward is None:
        return None
    return RewardPlan(formula=reward.formula(), terms=[RewardTermPlan(name=name, weight=term.weight,
                                                                      what=term.describe())
                                                       for name, term in reward.named()])


@dataclass(frozen=True)
class _Method:
    """The spec's method: its descriptor and its section (the spec's, or the defaults)."""

    descriptor: MethodDescriptor
    section: Any

    @property
    def name(self) -> str:
        return self.descriptor.name

    def check(self, batching: Batching) -> None:
        """The method's own rules, on resolved values (the validator saw `auto` in their place)."""
        for finding in self.descriptor.problems(self.section, batching):
            raise PlanError(f"{'.'.join(finding.path)}: {finding.message}", finding.hint)


def _reward_location(spec: JobSpec, folder: Path, run_root: Path) -> source.ModelLocation | None:
    reward = spec.reward_source()
    return source.locate(reward.model, folder, run_root) if reward is not None and reward.model is not None else None


def _reward_parameters(location: source.ModelLocation) -> int:
    """The reward model's size, from its own config on the meta device (it need not be the policy's)."""
    return build(source.load_config(location), registry.SCORE).facts.total_parameters


# --- device -------------------------------------------------------------------------------------

def _resolve_device(spec: JobSpec, method: _Method, machine: Machine, settings: Resolutions) -> DeviceFacts:
    hardware = spec.hardware
    kind = settings.pick("hardware.device", hardware.device, lambda: (
        ("cuda", f"{machine.cuda_devices} GPU(s) visible") if machine.has_cuda else ("cpu", "no GPU visible")))
    if kind == "cuda" and not machine.has_cuda:
        raise PlanError("hardware.device is cuda, but no GPU is visible", "use device: auto or cpu")
    count = settings.pick("hardware.gpus", hardware.gpus, lambda: (
        (machine.cuda_devices, "every visible GPU") if kind == "cuda" else (1, "one process on the CPU")))
    nodes = settings.given("hardware.nodes", hardware.nodes)
    if method.descriptor.single_device and count * nodes > 1:
        raise PlanError(f"method {method.name} runs on one device ({method.descriptor.training_path})",
                        "set hardware.gpus: 1 and hardware.nodes: 1")
    if kind == "cuda" and count > machine.cuda_devices:
        raise PlanError(f"hardware.gpus is {count}, but {machine.cuda_devices} GPU(s) are visible",
                        f"use gpus: {machine.cuda_devices} or auto")
    bf16 = machine.cuda_bf16 if kind == "cuda" else False
    precision = settings.pick("hardware.precision", hardware.precision, lambda: (
        ("bf16", "the GPU supports bf16") if bf16 else
        ("fp16", "the GPU has no bf16") if kind == "cuda" else
        ("fp32", "CPU: bf16 autocast is emulated on most CPUs and slower than fp32")))
    if kind == "cuda" and precision == "bf16" and not bf16:
        raise PlanError("hardware.precision is bf16, but this GPU does not support it", "use fp16 or auto")
    if kind == "cuda":
        names, memory_bytes = list(machine.cuda_names[:count]), machine.cuda_memory_bytes
    else:
        names, memory_bytes = ["cpu"], machine.ram_available_bytes
    return DeviceFacts(type=kind, count=count * nodes, nodes=nodes, names=names,
                       memory_gb=round(memory_bytes / memory.GIB, 2), bf16=bf16,
                       host_memory_gb=round(machine.ram_available_bytes / memory.GIB, 2), what_if=machine.what_if)


# --- trainable ----------------------------------------------------------------------------------

def _trainable(spec: JobSpec, method: _Method, skeleton: Skeleton, settings: Resolutions,
               location: source.ModelLocation):
    policy = spec.trainable.policy()
    new = method.descriptor.new_heads
    try:
        selection = trainable.select(skeleton.shapes, policy, num_layers=skeleton.facts.num_layers,
                                     tied=skeleton.tied, new=new)
    except trainable.SelectionError as error:
        raise PlanError(f"trainable.layers: {error}") from None
    if selection.unmatched:
        field_name, pattern = selection.unmatched[0]
        raise PlanError(f"trainable.{field_name}: '{pattern}' matches no parameter of this model",
                        "parameters look like: " + trainable.describe_names(list(skeleton.shapes)))
    if not selection.trains_anything:
        raise PlanError("this trainable selection trains no parameter", "widen layers or modules, or add also")
    lora = None
    if spec.trainable.mode == "lora":
        lora_spec = spec.trainable.lora or LoraSpec()
        alpha = settings.pick("trainable.lora.alpha", lora_spec.alpha, lambda: (2.0 * lora_spec.r, "2 x r"))
        lora = {"r": lora_spec.r, "alpha": float(alpha), "dropout": lora_spec.dropout, "rslora": lora_spec.rslora,
                "dora": lora_spec.dora, "loraplus_lr_ratio": lora_spec.loraplus_lr_ratio}
    quantized = _quantized_base(spec, skeleton, settings, location)
    return table.build(skeleton.shapes, selection, mode=spec.trainable.mode, lora=lora, new=new, tied=skeleton.tied,
                       quantized=quantized)


def _quantized_base(spec: JobSpec, skeleton: Skeleton, settings: Resolutions,
                    location: source.ModelLocation) -> QuantizedBase | None:
    wanted = spec.trainable.quantize
    if wanted is None:
        return None
    if not quantization.installed():
        raise PlanError("trainable.quantize needs bitsandbytes, which is not installed here",
                        f"install it: {pip_install(quantization.EXTRA)}")
    if location.is_gguf and not wanted.requantize_gguf:
        raise PlanError(f"the base model is read from a GGUF file ({location.path.name}), already quantised in its "
                        f"own format: {wanted.bits}-bit storage dequantises it to fp32 first, then quantises it again",
                        "set trainable.quantize.requantize_gguf: true to accept the second rounding")
    precision = settings.entries["hardware.precision"].value
    compute = settings.pick("trainable.quantize.compute_dtype", wanted.compute_dtype,
                            lambda: (precision, "the run's precision"))
    stored = quantization.Storage(wanted.bits, wanted.type, wanted.double_quant, compute)
    names = list(skeleton.quantizable)
    size = sum(stored.weight_bytes(*skeleton.shapes[name]) for name in names)
    return QuantizedBase(bits=wanted.bits, type=wanted.type, double_quant=wanted.double_quant, compute_dtype=compute,
                         quantized=names, stored_bytes=math.ceil(size), requantized_gguf=location.is_gguf)


# --- data and tokens ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Row:
    """A training row read to be measured: its source (by position in data.train), its position among
    that source's usable rows (what runner.data.mixing selects), where it is, and the row."""

    source: int
    ordinal: int
    at: RowAt
    row: dict


def _require_rows_read(checked: SpecResult) -> None:
    for report in checked.data.values():
        for source_report in report.sources:
            if source_report.unchecked:
                raise PlanError(f"{source_report.source.label}: {source_report.unchecked}",
                                f"install it where plans are made: {pip_install('train')}")


def _read_rows(train: DataReport, limit: int) -> list[_Row]:
    """The first usable rows of each training source, `limit` in all, shared equally between the sources
    (the unusable ones are the validator's business)."""
    share = max(1, limit // len(train.sources))
    rows = []
    for position, report in enumerate(train.sources):
        ordinal = 0
        for at, row, problem in report.source.rows(report.format):
            if ordinal >= share:
                break
            if problem is None:
                rows.append(_Row(position, ordinal, at, row))
                ordinal += 1
    return rows


def _epoch_rows(spec: JobSpec, train: DataReport, unusable: set[tuple[int, int]]) -> list[int]:
    """Rows one epoch takes from each training source: its usable rows times its weight
    (runner.data.mixing), less the measured rows that fail to encode."""
    counts = []
    for position, report in enumerate(train.sources):
        weight = report.source.weight
        if any(source == position for source, _ in unusable):
            picked = mixing.selection(report.usable, weight, spec.training.seed, position)
            count = sum(1 for ordinal in picked if (position, ordinal) not in unusable)
        else:
            count = mixing.rows_per_epoch(report.usable, weight)
        if count == 0 and report.usable:
            raise PlanError(f"data.train source {report.source.label}: weight {weight:g} of {report.usable} usable "
                            "rows takes no row", "raise its weight, or remove the source")
        counts.append(count)
    return counts


def _auto_chat_template(tokenizer) -> tuple[bool, str]:
    if getattr(tokenizer, "chat_template", None):
        return True, "the tokenizer has a chat template: text rows become user and assistant turns"
    return False, "the tokenizer has no chat template: rows are plain text"


def _auto_max_length(tokenizer, use_chat: bool, spec: JobSpec, method: _Method, rows, format_name: str,
                     skeleton: Skeleton):
    encoder = RowEncoder(tokenizer, use_chat_template=use_chat, loss_on=spec.training.loss_on, max_length=None)
    lengths = [_measure(encoder, method, format_name, measured.row)[0] for measured in rows]
    longest = max((n for n in lengths if n), default=MAX_AUTO_LENGTH)
    cap = min(MAX_AUTO_LENGTH, skeleton.facts.max_positions or MAX_AUTO_LENGTH)
    value = min(cap, _round_up(longest, 8))
    return value, f"the longest of {len(rows)} rows is {longest} tokens (rounded up to 8, at most {cap})"


def _measure(encoder: RowEncoder, method: _Method, format_name: str, row: dict) -> tuple[int, bool]:
    """(tokens, cut at max_length) of a row's longest sequence; (0, False) when it cannot be encoded."""
    try:
        return KINDS[method.descriptor.rows].measure(encoder, row, format_name)
    except RowError:
        return 0, False


def _token_stats(encoder: RowEncoder, method: _Method, format_name: str,
                 rows: list[_Row]) -> tuple[TokenStats, list[int], set[tuple[int, int]]]:
    """(statistics of the measured rows, their lengths, the (source, ordinal) of those that cannot be encoded)."""
    lengths, truncated, unusable = [], 0, set()
    for measured in rows:
        length, cut = _measure(encoder, method, format_name, measured.row)
        if not length:
            unusable.add((measured.source, measured.ordinal))
            continue
        truncated += cut
        lengths.append(length)
    stats = TokenStats(rows_measured=len(rows), mean_tokens=round(sum(lengths) / max(len(lengths), 1), 1),
                       max_tokens=max(lengths, default=0), truncated_rows=truncated, unusable_rows=len(unusable))
    return stats, lengths, unusable


def _loss_mask_preview(encoder: RowEncoder, spec: JobSpec, method: _Method, terms, train: DataReport,
                       rows: list[_Row]) -> LossMaskPreview:
    kind = KINDS[method.descriptor.rows]
    examples = []
    by_source = [[measured for measured in rows if measured.source == position] for position in range(len(train.sources))]
    for measured in (row for turn in itertools.zip_longest(*by_source) for row in turn if row is not None):
        if len(examples) >= PREVIEW_ROWS * kind.parts:  # a row of each source in turn: each one's rendering shows
            break
        label = train.sources[measured.source].source.label if len(train.sources) > 1 else None
        place = {"line": measured.at.line, "row": measured.at.index, "source": label}
        try:
            examples.extend(kind.preview(encoder, measured.row, train.format, place))
        except RowError:
            continue
    rule = mask_rule(method.descriptor, train.format, encoder.use_chat_template, spec.training.loss_on)
    return LossMaskPreview(rule=rule, examples=examples, chat_template=encoder.use_chat_template,
                           generation_tokens=terms.generated_tokens or None)


# --- steps --------------------------------------------------------------------------------------

def _steps(spec: JobSpec, method: _Method, settings: Resolutions, device: DeviceFacts, rows: int,
           stats: TokenStats, mode: str, has_eval: bool) -> Steps:
    """`rows`: the training rows of one epoch (every source's, by weight)."""
    training = spec.training
    if rows == 0:
        raise PlanError("no usable training rows", "every measured row failed to encode; see runner validate")
    group = method.descriptor.completions_per_prompt(method.section)  # above 1, the batch counts completions

    def auto_batch():
        if group > 1:
            return 2 * group, f"two prompts x {group} completions each"
        value = min(DEFAULT_BATCH, rows)
        value = max(device.count, value - value % device.count)
        return value, f"{DEFAULT_BATCH} (a common small-data default), at most the {rows} rows, a multiple of " \
                      f"{device.count} device(s)"

    batch = settings.pick("training.batch_size", training.batch_size, auto_batch)
    if batch % device.count:
        raise PlanError(f"training.batch_size {batch} is not a multiple of the {device.count} devices")
    steps_per_epoch = max(1, math.ceil(rows * group / batch))
    episodes = method.descriptor.episodes(method.section)
    if episodes is not None and training.max_steps is None:
        training = training.model_copy(update={"max_steps": math.ceil(episodes / batch)})
    if training.max_steps is not None:
        settings.given("training.max_steps", training.max_steps)
        epochs = settings.auto("training.epochs", round(training.max_steps / steps_per_epoch, 3),
                               "follows from max_steps")
        total = training.max_steps
    else:
        epochs = settings.pick("training.epochs", training.epochs, lambda: (
            (3, "3 passes for under 1,000 rows") if rows < 1000 else
            (2, "2 passes for under 10,000 rows") if rows < 10_000 else (1, "1 pass for 10,000 rows or more")))
        total = max(1, math.ceil(steps_per_epoch * epochs))
        settings.auto("training.max_steps", total, f"{steps_per_epoch} steps per epoch x {epochs} epochs")
    settings.pick("training.learning_rate", training.learning_rate, lambda: (
        method.descriptor.learning_rates[mode], f"default for {method.name} with {mode} training"))
    warmup = settings.pick("training.warmup_ratio", training.warmup_ratio,
                           lambda: (0.03, "3% of the steps (common default)"))
    for key in ("lr_scheduler", "loss_on", "weight_decay", "max_grad_norm", "seed", "log_every"):
        settings.given(f"training.{key}", getattr(training, key))
    eval_every = None
    if has_eval:
        eval_every = settings.pick("training.eval_every", training.eval_every,
                                   lambda: (steps_per_epoch, "once per epoch"))
    return Steps(rows=rows, batch_size=batch, micro_batch_size=batch // device.count, devices=device.count,
                 gradient_accumulation=1, steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=total,
                 warmup_steps=round(warmup * total), eval_every=eval_every, checkpoint_every=total, tokens=stats)


# --- memory -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Kept:
    """What the run holds besides the model: facts read before memory is estimated."""

    data_tokens: int
    gguf_conversion: bool


def _data_tokens(checked: SpecResult, steps: Steps, stats: TokenStats, terms: registry.MemoryTerms) -> int:
    """Tokens of the encoded rows a run keeps: an epoch of training rows and the eval rows, at the measured mean."""
    evaluation = checked.data.get("eval")
    rows = steps.rows + (sum(report.usable for report in evaluation.sources) if evaluation else 0)
    return math.ceil(rows * stats.mean_tokens * terms.sequences_per_row)


def _converts_gguf(location: source.ModelLocation) -> bool:
    """Whether a run would dequantise a GGUF file first (its fp32 copy is not cached yet)."""
    return location.is_gguf and not any(source.gguf_companion(location.path).glob("*.safetensors"))


def _padded(method: _Method, tokens: TokenStats, packing: Layouts | None, terms: registry.MemoryTerms) -> bool:
    """Whether batches carry an attention mask: always, except in runner's own loop on rows that all fill
    max_length (then nothing is padded; a TRL collator or a rollout may pad regardless)."""
    full_length = tokens.rows_measured > 0 and tokens.truncated_rows == tokens.rows_measured
    return not (method.descriptor.runner_loop and full_length and packing is None and not terms.generated_tokens)


def _saved(settings: Resolutions, trainable_plan, total: int) -> tuple[int, int]:
    """(parameters, bytes each) the final save writes."""
    form = settings.entries["outputs.save"].value
    if form == "adapter":
        return trainable_plan.trainable_parameters, 4
    if form == "merged":
        return total, 2 if settings.entries["hardware.precision"].value in ("bf16", "fp16") else 4
    return total, 4


def _memory(spec: JobSpec, method: _Method, terms: registry.MemoryTerms, settings: Resolutions, device: DeviceFacts,
            skeleton: Skeleton, trainable_plan, steps: Steps, max_length: int, packing: Layouts | None,
            sizes: dict[str, int], kept: _Kept):
    """`sizes`: the parameters of the policy and of the other models a method holds (ExtraModel.parameters_of)."""
    precision = settings.entries["hardware.precision"].value
    # A forward pass holds rows, or packed blocks; a step needs the per-device share of either.
    per_device = math.ceil(packing.blocks_per_step / device.count) if packing else steps.batch_size // device.count
    if spec.hardware.max_memory_gb is not None:
        budget, budget_source = int(spec.hardware.max_memory_gb * memory.GIB), "hardware.max_memory_gb"
    elif device.type == "cuda":
        budget, budget_source = int(device.memory_gb * memory.GIB), "GPU memory"
    else:  # the processes on one node share its memory
        budget = int(device.memory_gb * memory.GIB / device.per_node)
        budget_source = "available RAM" + (f" / {device.per_node} processes" if device.per_node > 1 else "")
    seq_len = max_length if packing else min(max_length, _round_up(max(steps.tokens.max_tokens, 1), 8))
    lora = trainable_plan.mode == "lora"
    adapted = trainable_plan.lora.targets if lora else []
    base = memory.Workload(
        mode=trainable_plan.mode, precision=precision, device=device.type, micro_batch=per_device,
        seq_len=seq_len, checkpointing=False, trainable_parameters=trainable_plan.trainable_parameters,
        lowest_trained_layer=trainable_plan.lowest_trained_layer, sequences_per_row=terms.sequences_per_row,
        logits=terms.logits, generation_tokens=terms.generated_tokens,
        rollout_sequences=per_device if terms.generated_tokens else 0,
        extra_models=tuple(memory.extra_model(model, sizes[model.parameters_of]) for model in terms.models),
        adapter_inputs=sum(skeleton.shapes[target + ".weight"][1] for target in adapted),
        adapter_dropout=bool(lora and trainable_plan.lora.dropout > 0 and method.descriptor.dropout),
        trl=not method.descriptor.runner_loop, vocab_size=skeleton.facts.vocab_size, data_tokens=kept.data_tokens,
        gguf_conversion=kept.gguf_conversion, padded=_padded(method, steps.tokens, packing, terms),
    )
    dora = bool(lora and trainable_plan.lora.dora)
    adapted_shapes = [skeleton.shapes[target + ".weight"] for target in adapted]
    outputs = sum(shape[0] for shape in adapted_shapes)
    if device.type == "cpu":  # see Workload.adapter_heap_outputs; DoRA frees two such outputs per module
        base = replace(base, adapter_heap_outputs=outputs * (2 if dora else 1))
        if terms.generated_tokens and method.descriptor.runner_loop:  # see Workload.heap_passes
            base = replace(base, heap_passes=memory.HEAP_KEPT_RL_PASSES)
    if dora:  # the base output and the adapter's, for the magnitude's gradient and the adapter's
        base = replace(base, adapter_outputs=2 * outputs,
                       largest_adapted=max((math.prod(shape) for shape in adapted_shapes), default=0))
    quantized = trainable_plan.quantized
    if quantized:
        base = replace(base, quantized_parameters=sum(math.prod(skeleton.shapes[n]) for n in quantized.quantized),
                       quantized_bytes=quantized.stored_bytes,
                       largest_quantized=max((math.prod(skeleton.shapes[n]) for n in quantized.quantized), default=0))
    saved_parameters, saved_each = _saved(settings, trainable_plan, skeleton.facts.total_parameters)
    base = replace(base, saved_parameters=saved_parameters, saved_bytes_each=saved_each)
    minibatches = method.descriptor.minibatches(method.section)
    unit, unit_name = per_device // minibatches, "minibatch" if minibatches > 1 else "per-device batch"
    host = int(device.host_memory_gb * memory.GIB) if device.host_memory_gb else None
    try:
        layout = strategy.choose(skeleton.facts, base, spec.hardware, device, unit, budget, host,
                                 unsharded=method.descriptor.unsharded_reason() or (
                                     "a quantized base is not sharded" if quantized else None),
                                 minimum=method.descriptor.min_micro_batch, unit_name=unit_name)
    except strategy.LayoutError as error:
        raise PlanError(f"method {method.name}: {error}", "set hardware.strategy: ddp (or auto), and give each "
                        f"device at least {method.descriptor.min_micro_batch} row(s) a step") from None
    base = replace(base, strategy=layout.strategy, devices=device.count, offload=layout.offload)
    settings.pick("hardware.strategy", spec.hardware.strategy, lambda: (layout.strategy, layout.strategy_rule))
    settings.pick("hardware.offload", spec.hardware.offload, lambda: (
        layout.offload, "on: nothing fits on the devices alone" if layout.offload else "off: not needed"))
    micro, checkpointing, rule = layout.micro_batch, layout.checkpointing, layout.micro_rule
    settings.pick("training.micro_batch_size", spec.training.micro_batch_size, lambda: (
        micro, rule.replace("per-device batch", "blocks per step and device") if packing else rule))
    micro = settings.entries["training.micro_batch_size"].value
    method.check(Batching(trainable_plan.mode, steps.batch_size, micro, device.count))
    if packing:
        settings.auto("training.gradient_accumulation", math.ceil(unit / micro),
                      f"about {packing.blocks_per_step:.1f} blocks per step / {device.count} device(s) / {micro} "
                      "per pass (packed steps vary)")
    elif unit % micro:
        raise PlanError(f"micro_batch_size {micro} does not divide the {unit_name} {unit}")
    else:
        settings.auto("training.gradient_accumulation", unit // micro, f"{unit_name} {unit} / micro-batch {micro}")
    checkpointing = settings.pick("hardware.gradient_checkpointing", spec.hardware.gradient_checkpointing,
                                  lambda: (checkpointing, "on: needed to fit" if checkpointing
                                           else "off: fits without (recomputing costs a third more compute)"))
    work = memory.Workload(**{**base.__dict__, "micro_batch": micro, "checkpointing": checkpointing})
    estimate = memory.estimate(skeleton.facts, work, budget, budget_source)
    if spec.hardware.max_memory_gb is not None:
        settings.given("hardware.max_memory_gb", spec.hardware.max_memory_gb)
    if not estimate.fits or not layout.fits:
        tried = f"; tried: {layout.strategy_rule.removeprefix('nothing fits: ')}" if not layout.fits else ""
        raise PlanError(
            f"the estimate ({estimate.total_bytes / memory.GIB:.1f} GiB per device) does not fit "
            f"{budget_source} ({budget / memory.GIB:.1f} GiB){tried}",
            "; ".join([*estimate.advice, _more_devices(method, skeleton, work, budget, device)]))
    return estimate, work


def _more_devices(method: _Method, skeleton: Skeleton, work: memory.Workload, budget: int,
                  device: DeviceFacts) -> str:
    unsharded = method.descriptor.unsharded_reason()
    if work.quantized_parameters and not unsharded:
        return "a quantized base is not sharded, so more devices do not help"
    if unsharded:
        return f"{method.name} does not shard ({unsharded}), so more devices do not help"
    needed = strategy.devices_needed(skeleton.facts, work, budget, device.count)
    size = f"{budget / memory.GIB:.1f} GiB"
    if needed is None:
        return f"no number of devices of {size} fits it: the activations of one sequence alone are too big"
    return f"{needed} devices of {size} would fit it with hardware.strategy: fsdp (gpus: {needed})"


# --- outputs and method settings ----------------------------------------------------------------

def _resolve_outputs(spec: JobSpec, settings: Resolutions, steps: Steps) -> int:
    outputs = spec.outputs
    settings.given("outputs.dir", outputs.dir)
    settings.pick("outputs.save", outputs.save, lambda: (
        ("adapter", "LoRA: the adapter alone (small; loads on top of the base)") if spec.trainable.mode == "lora"
        else ("full", "full weights for full and freeze training")))
    every = settings.pick("outputs.checkpoint_every", outputs.checkpoint_every, lambda: (
        min(steps.total_steps, max(CHECKPOINT_MIN_STEPS, math.ceil(steps.total_steps / 5))),
        f"about five per run, at least {CHECKPOINT_MIN_STEPS} steps apart (a checkpoint with its optimizer state "
        "is about three times the weights)"))
    settings.given("outputs.keep_checkpoints", outputs.keep_checkpoints)
    settings.given("outputs.keep_checkpoints_after_success", outputs.keep_checkpoints_after_success)
    settings.given("data.max_rejected", spec.data.max_rejected)
    return every


def _resolve_packing(spec: JobSpec, method: _Method, settings: Resolutions, lengths: list[int], steps: Steps,
                     max_length: int, config) -> Layouts | None:
    """For a method whose loop packs (SFT's): pack rows into blocks when that fills clearly more of each
    forward pass, and the model keeps packed documents apart."""
    if not method.descriptor.packing:
        return None
    key = f"{method.name}.packing"
    measured = layouts(lengths, steps.batch_size, steps.batch_size // steps.devices, max_length,
                       spec.training.seed)
    share = f"padded batches would hold {measured.padded:.0%} real tokens, packed blocks {measured.packed:.0%}"
    wanted = method.section.packing
    if wanted == "auto" and measured.packed < measured.padded + WORTH_IT:
        settings.auto(key, False, f"off: {share}")
        return None
    if wanted is False:
        settings.given(key, False)
        return None
    if not keeps_documents_apart(config):
        if wanted is True:
            raise PlanError("this model attends across packed documents (restarting position ids do not isolate "
                            "them)", "set sft.packing: false")
        settings.auto(key, False, f"off: {share}, but this model does not keep packed documents apart")
        return None
    if wanted is True:
        settings.given(key, True)
    else:
        settings.auto(key, True, f"on: {share}; documents stay apart (checked on a one-block copy)")
    return measured


def _record_method_settings(spec: JobSpec, method: _Method, settings: Resolutions) -> None:
    """Every field of the method's section: as given, or (for `auto`) resolved by the descriptor."""
    resolved = method.descriptor.resolve(method.section, spec.trainable.mode)
    for key, value in method.section.model_dump(mode="json").items():
        path = f"{method.name}.{key}"
        if path in settings.entries:
            continue
        if value == "auto" and key in resolved:
            settings.auto(path, *resolved[key])
        else:
            settings.given(path, value)


def _training_path(method: _Method, settings: Resolutions) -> str:
    path = method.descriptor.training_path
    if not method.descriptor.packing:
        return path
    if settings.entries[f"{method.name}.packing"].value:
        return (f"{path}; packed blocks of up to {settings.entries['training.max_length'].value} tokens, documents "
                "kept apart by restarting position ids")
    return f"{path}; padded micro-batches"


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
