"""The plan as a short report a person can review in a pull request."""

from __future__ import annotations

from pathlib import Path

from runner.methods import registry
from runner.plan.evals import DECODE_COST
from runner.plan.models import EvalPlan, MaskedExample, Plan
from runner.spec.check import display_path
from runner.terminal import human, printable

GIB = 1024**3


def gib(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size < 10 * GIB else f"{size / GIB:.1f} GiB"


def render(plan: Plan, *, colour: bool = False) -> str:
    sections = [_header(plan), _trainable(plan), _loss_mask(plan, colour), _reward(plan), _options(plan), _data(plan),
                _steps(plan), render_evals(plan.evals) if plan.evals else "", _memory(plan), _disk(plan), _settings(plan),
                _inputs(plan)]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(plan: Plan) -> str:
    model, device = plan.inputs.base_model, plan.device
    location = model.location if model.kind in ("local", "gguf", "offline_copy") else model.reference
    kind = {"offline_copy": f"offline copy of {model.reference} (GGUF, dequantised)", "hub": "hub cache",
            "job": f"output of {model.reference}", "local": "local folder", "gguf": "GGUF, dequantised"}[model.kind]
    precision = plan.settings.hardware.precision.value
    layout = _layout(plan)
    return "\n".join([
        f"Plan for {plan.name}: {plan.method}, {plan.trainable.mode} training",
        f"  base model   {location}  ({kind})",
        f"  model        {plan.model.architecture}, {plan.model.num_layers} blocks, hidden {plan.model.hidden_size}, "
        f"vocabulary {plan.model.vocab_size:,}",
        f"  device       {device.type} x{device.count} ({', '.join(device.names)}"
        + (f" on each of {device.nodes} nodes" if device.nodes > 1 else "") + f"), {precision}{layout}"
        + ("  [what-if: planned for --machine, not runnable here]" if device.what_if else ""),
        f"  trainer      {plan.training_path}",
        *([f"  objective    {plan.objective}"] if plan.objective else []),
    ])


def _layout(plan: Plan) -> str:
    hardware = plan.settings.hardware
    if hardware.strategy.value == "ddp" and plan.device.count == 1:
        return ""
    return f", {hardware.strategy.value}" + (" with CPU offload" if hardware.offload.value else "")


def _trainable(plan: Plan) -> str:
    t = plan.trainable
    lines = [f"What is trained: {human(t.trainable_parameters)} of {human(t.total_parameters)} parameters "
             f"({t.trainable_percent:.2f}%)"]
    storage = bool(t.quantized)
    lines.append(f"  {'blocks':<8} {'family':<11} {'status':<8} " + (f"{'storage':<8} " if storage else "")
                 + f"{'parameters':>10}  names")
    for row in t.table:
        stored = f"{row.storage or '-':<8} " if storage else ""
        lines.append(f"  {row.layers:<8} {row.family:<11} {row.status:<8} {stored}{human(row.parameters):>10}  "
                     f"{row.names}")
    if t.quantized:
        q = t.quantized
        lines.append(f"  base storage: {q.storage().describe()}: {len(q.quantized)} linear weights in "
                     f"{gib(q.stored_bytes)} with their scales; the rest in {q.compute_dtype}"
                     + ("; the GGUF file is dequantised to fp32 first" if q.requantized_gguf else ""))
    if t.lora:
        lines.append("  " + lora_line(t.lora, plan.method))
    lines += [f"  note: {note}" for note in t.notes]
    return "\n".join(lines)


def lora_line(lora, method: str) -> str:
    """The adapter's settings, each variant with what it changes."""
    dropout = f"{lora.dropout:g}"
    if lora.dropout > 0 and not registry.get(method).dropout:  # the trainer sets every dropout to 0
        dropout += f" (no effect: {method} trains with dropout off)"
    scale = f"alpha/sqrt(r) = {lora.scaling:.3g} (rsLoRA)" if lora.rslora else f"alpha/r = {lora.scaling:.3g}"
    variants = [f"scale {scale}"]
    if lora.dora:
        variants.append("DoRA (a trained magnitude per output)")
    if lora.loraplus_lr_ratio:
        variants.append(f"LoRA+ (B matrices at {lora.loraplus_lr_ratio:g}x the learning rate)")
    return (f"LoRA r={lora.r} alpha={lora.alpha:g} dropout={dropout}, {', '.join(variants)}: {len(lora.targets)} "
            f"modules, {human(lora.adapter_parameters)} adapter parameters")


def _loss_mask(plan: Plan, colour: bool) -> str:
    preview = plan.loss_mask
    marker = "highlighted" if colour else "inside [[ ]]"
    lines = [f"Which tokens the loss covers: {preview.rule}", f"  (trained text {marker})"]
    for example in preview.examples:
        lines.append(f"  {_place(example)} {example.part}: {example.trained_tokens} of {example.tokens} tokens "
                     "trained")
        lines.append("    " + _spans(example, colour).replace("\n", "\n    "))
    if preview.generation_tokens:
        lines.append(f"  generation budget: up to {preview.generation_tokens} new tokens per prompt")
    return "\n".join(lines)


def _place(example: MaskedExample) -> str:
    where = f"row index {example.row}" if example.row is not None else f"line {example.line}"
    return f"{example.source} {where}" if example.source else where


def _spans(example: MaskedExample, colour: bool) -> str:
    parts = []
    for span in example.spans:
        text = printable(span.text)  # a row's text, shown on the operator's terminal
        if not span.trained:
            parts.append(text)
        elif colour:
            parts.append(f"\033[1;42;30m{text}\033[0m")
        else:
            parts.append(f"[[{text}]]")
    return "".join(parts)


def _reward(plan: Plan) -> str:
    if plan.reward is None:
        return ""
    width = max(len(term.name) for term in plan.reward.terms)
    lines = [f"Reward: {plan.reward.formula}  (a check scores 1 when it passes, 0 when it does not)"]
    lines += [f"  {term.name:<{width}}  x{term.weight:<5g} {term.what}" for term in plan.reward.terms]
    return "\n".join(lines)


def _options(plan: Plan) -> str:
    if not plan.options:
        return ""
    width = max(len(option.name) for option in plan.options)
    lines = [f"{plan.method} options (value, and where it comes from):"]
    for option in plan.options:
        shown = "default" if option.value == option.default else f"default {option.default}"
        lines.append(f"  {option.name:<{width}}  {option.value!s:<6} ({shown})  {option.origin}")
    return "\n".join(lines)


def _data(plan: Plan) -> str:
    """Each source: its rows, and for training what one epoch takes from it (usable rows x weight)."""
    train = [data for data in plan.inputs.data if data.role == "train"]
    epoch = sum(data.epoch_rows or 0 for data in train)
    lines = [f"Data: an epoch is {epoch} rows" + (", every source's usable rows x its weight, shuffled together"
                                                  if len(train) > 1 else "")]
    width = max(len(data.source or data.path) for data in plan.inputs.data)
    for data in plan.inputs.data:
        line = f"  {data.role:<6} {data.source or data.path:<{width}}  {data.rows} rows, {data.usable_rows} usable"
        line += f" ({data.format})"
        if data.role == "train" and data.epoch_rows is not None:
            share = data.epoch_rows / epoch if epoch else 0
            line += f"; x{data.weight:g} -> {data.epoch_rows} per epoch ({share:.0%})"
        if data.columns:
            line += "; columns " + ", ".join(f"{key}<-{column}" for key, column in data.columns.items())
        lines.append(line)
    return "\n".join(lines)


def _steps(plan: Plan) -> str:
    s = plan.steps
    tokens = s.tokens
    warmup = f", {s.warmup_steps} warm-up" if s.warmup_steps else ""
    evaluation = f"; eval every {s.eval_every} steps" if s.eval_every else ""
    return "\n".join([
        f"Steps: {s.total_steps} optimizer steps ({s.steps_per_epoch} per epoch x {s.epochs:g} epochs{warmup}"
        f"{evaluation}); checkpoint every {s.checkpoint_every}",
        f"  batch {s.batch_size} rows = {s.devices} device(s) x "
        + (f"about {s.gradient_accumulation} passes of {s.micro_batch_size} packed block(s)"
           if plan.packs()
           else f"micro-batch {s.micro_batch_size} x {s.gradient_accumulation} accumulation") + f"; {s.rows} rows",
        f"  tokens per row: mean {tokens.mean_tokens:g}, max {tokens.max_tokens} (max_length "
        f"{plan.settings.training.max_length.value}); {tokens.truncated_rows} of {tokens.rows_measured} measured rows "
        f"truncated, {tokens.unusable_rows} unusable",
    ])


def render_evals(evals: EvalPlan) -> str:
    """What is evaluated, on which model, and about what it costs next to training."""
    sets = sum(item.kind == "set" for item in evals.items)
    counted = ", ".join(part for part in (f"{sets} test set{'s' if sets != 1 else ''}" if sets else "",
                                          f"{len(evals.items) - sets} lm-eval task"
                                          f"{'s' if len(evals.items) - sets != 1 else ''}"
                                          if len(evals.items) > sets else "") if part)
    cached = f" (cached: {', '.join(evals.base_cached)})" if evals.base_cached else ""
    lines = [f"Evals: {counted}, on the base{cached} and the result"
             + ("; prompts through the chat template" if evals.chat_template else "")]
    width = max(len(item.name) for item in evals.items)
    for item in evals.items:
        if item.kind == "set":
            what = f"{item.data.source}  {item.rows} rows"
        else:
            where = display_path(Path(item.task_file)) if item.task_file else f"lm-eval's {item.task}"
            what = f"{where}  {item.rows if item.rows is not None else '?'} documents, {item.output_type}"
        generated = f"; up to {item.max_new_tokens} new tokens each ({human(item.new_tokens)} at most)" \
            if item.generates and item.new_tokens else ""
        if item.prompt_tokens is not None and item.kind == "set":
            generated += f"; prompts {human(item.prompt_tokens)} tokens"
        scored = ", ".join(item.metrics) or "the task's metrics"
        lines.append(f"  {item.kind:<4} {item.name:<{width}}  {what}{generated}; {scored}")
    if evals.every:
        during = ", ".join(item.name for item in evals.items if item.during)
        lines.append(f"  while training: {during} every {evals.every} steps ({evals.during_evaluations} times)"
                     + (f"; the best by {evals.keep_best} kept in best/" if evals.keep_best else ""))
    if evals.share_of_training is not None:
        work = evals.token_work
        share = evals.share_of_training
        lines.append(f"  cost: about {f'{share:.0%} of' if share < 2 else f'{share:.1f}x'} the training's time (estimate: "
                     f"{human(work['base'] + work['during'] + work['result'])} token passes against training's "
                     f"{human(work['training'])}; a generated token counts {DECODE_COST})")
    lines += [f"  require: {gate}" for gate in evals.require]
    lines += [f"  note: {note}" for note in evals.notes]
    return "\n".join(lines)


def _memory(plan: Plan) -> str:
    m = plan.memory
    verdict = "fits" if m.fits else "DOES NOT FIT"
    lines = [f"Memory per device: {gib(m.total_bytes)} of {gib(m.budget_bytes)} ({m.budget_source}): {verdict}"]
    if m.measures:
        lines.append(f"  predicts: {m.measures}")
    if len(m.moments) > 1:
        lines.append(f"  peak while {m.peak}; " + ", ".join(f"{moment.name} {gib(moment.bytes)}"
                                                             for moment in m.moments))
    lines.append(f"  without gradient checkpointing {gib(m.without_checkpointing_bytes)}, with "
                 f"{gib(m.with_checkpointing_bytes)}")
    lines += [f"  {item.name:<19} {gib(item.bytes):>10}  {item.note}" for item in m.items if item.bytes]
    lines += [f"  not known before loading: {note}" for note in m.unknown]
    lines += [f"  to fit: {hint}" for hint in m.advice]
    return "\n".join(lines)


def _disk(plan: Plan) -> str:
    d = plan.disk
    if d is None:
        return ""
    lines = [f"Disk: up to {gib(d.peak_bytes)} while it runs, {gib(d.kept_bytes)} kept after success"]
    lines += [f"  {item.name:<19} {gib(item.bytes):>10}  {item.note}" for item in d.items]
    return "\n".join(lines)


def _settings(plan: Plan) -> str:
    lines = ["Settings (auto resolved, and why):"]
    settings = plan.settings_by_key()
    for key, entry in settings.items():
        if entry.rule != "spec":
            lines.append(f"  {key} = {entry.value}  ({entry.rule.removeprefix('auto: ')})")
    shown_above = {f"{plan.method}.reward", *(f"{plan.method}.{option.name}" for option in plan.options)}
    given = [f"{key}={entry.value}" for key, entry in settings.items()
             if entry.rule == "spec" and key not in shown_above]
    lines.append("  from the spec: " + ", ".join(given))
    return "\n".join(lines)


def _inputs(plan: Plan) -> str:
    inputs = plan.inputs
    lines = ["Inputs:", f"  spec   {inputs.spec_path}  sha256 {inputs.spec_sha256[:16]}"]
    for data in inputs.data:
        revision = f"  revision {data.revision}" if data.revision else ""
        files = f" ({len(data.files)} files)" if len(data.files) > 1 else ""
        lines.append(f"  {data.role:<6} {data.path}{revision}{files}  sha256 {data.sha256[:16]}  {data.rows} rows "
                     f"({data.usable_rows} usable, {data.format}, {data.variant})")
    model = inputs.base_model
    revision = f"  revision {model.revision}" if model.revision else ""
    lines.append(f"  model  {model.reference}{revision}: {len(model.files)} file(s)"
                 + "".join(f"\n           {f.path}  sha256 {f.sha256[:16]}  {f.size:,} bytes" for f in model.files[:6]))
    versions = ", ".join(f"{name} {version}" for name, version in inputs.versions.items())
    lines.append(f"  versions  {versions}")
    return "\n".join(lines)
