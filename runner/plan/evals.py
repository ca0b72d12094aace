"""The eval plan: each eval of the spec with what it reads (exactly the files), what it asks of the model
(prompts, tokens to generate), what identifies it (for the base's cache), and about what the evals cost
next to training.

The cost is counted in tokens through the model, as forward-pass equivalents: a trained token counts 3
(forward and backward), a prompt token 1, a generated token DECODE_COST (one token per forward pass:
decoding uses the hardware far worse than a batch of whole sequences does). The ratio of the two is the
estimate of eval time over training time the plan shows; bench/eval.py measures it.

lm-eval is not imported: tasks are read from their YAML files (runner.evals.tasks).
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from runner import __version__
from runner.data import sources
from runner.errors import RunnerError
from runner.evals import cache, metrics, rows, tasks
from runner.fsutil import file_sha256
from runner.install import pip_install
from runner.plan.identity import data_identity
from runner.plan.models import EvalItem, EvalPlan, ModelIdentity, Steps
from runner.plan.tokens import RowEncoder
from runner.spec.datacheck import SourceReport
from runner.spec.evals import EvalSet, EvalsSpec, EvalTask

DECODE_COST = 8
"""A generated token, in forward-pass token equivalents (measured by bench/eval.py: 2 to 6 on the CPU
and small models, where decoding is bound by per-pass overhead; taken high, so the estimate errs long)."""
TASK_CONTEXT_TOKENS = 256
"""Tokens assumed per lm-eval request: its prompts are rendered by lm-eval (Jinja), not at planning."""
MEASURED_ROWS = 2000
"""Rows of a test set whose prompts are tokenized; the rest are counted and extrapolated."""


def plan_evals(evals: EvalsSpec, folder: Path, tokenizer, chat_template: bool, base: ModelIdentity | None,
               steps: Steps | None, seed: int, devices: int = 1) -> EvalPlan:
    """`chat_template`: how the training data is rendered (the sets follow it unless evals say otherwise).
    Without `steps` (`runner eval`: no training) nothing is evaluated while training, and no share of it
    is estimated; without `base` no base results are looked for."""
    generation = evals.generation
    chat = chat_template if generation.chat_template == "auto" else generation.chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise RunnerError("evals.generation.chat_template: the tokenizer has no chat template",
                          "set evals.generation.chat_template: false")
    encoder = RowEncoder(tokenizer, use_chat_template=chat, loss_on="completion", max_length=None)
    items = [_plan_set(item, folder, encoder, evals, seed) for item in evals.sets]
    items += [_plan_task(task, folder) for task in evals.tasks]
    notes = []
    every = evals.every if steps is not None else None
    during = (steps.total_steps - 1) // every if every else 0
    if every and devices > 1:
        notes.append(f"no evaluation while training: it runs in one process, and this run has {devices}")
        during = 0
    cached = [item.name for item in items if base is not None and cache.cached(base, item)]
    work = {"training": round(steps.total_steps * steps.batch_size * steps.tokens.mean_tokens * 3) if steps else 0,
            "base": sum(_work(item) or 0 for item in items if item.name not in cached),
            "during": during * sum(_work(item) or 0 for item in items if item.during),
            "result": sum(_work(item) or 0 for item in items)}
    unknown = [item.name for item in items if _work(item) is None]
    if unknown:
        notes.append(f"the size of {', '.join(unknown)} is unknown before running (set limit to bound it)")
    share = None if unknown or not work["training"] else round(
        (work["base"] + work["during"] + work["result"]) / work["training"], 3)
    return EvalPlan(items=[item.model_copy(update={"during": item.during and during > 0}) for item in items],
                    chat_template=chat, every=every if during else None, during_evaluations=during,
                    keep_best=evals.keep_best if during else None, require=list(evals.require), base_cached=cached,
                    token_work=work, share_of_training=share, notes=notes)


def _work(item: EvalItem) -> int | None:
    if item.prompt_tokens is None:
        return None
    return item.prompt_tokens + (item.new_tokens or 0) * DECODE_COST


def _plan_set(item: EvalSet, folder: Path, encoder: RowEncoder, evals: EvalsSpec, seed: int) -> EvalItem:
    source = sources.resolve(item.data, folder, "eval")
    names = [metric.name for metric in item.metrics]
    loglikelihood = "loglikelihood" in names
    count, prompt_tokens = 0, 0
    for _, row, problem in rows.read(source, any(name in metrics.NEEDS_REFERENCE for name in names), item.limit):
        if problem is not None:
            raise RunnerError(f"evals.sets {item.name}: {problem}", "see: runner validate")
        count += 1
        if count <= MEASURED_ROWS:
            prompt_tokens += encoder.count(encoder.prompt_text({"prompt": row.prompt}, "prompt_only"))
            if loglikelihood:
                prompt_tokens += encoder.count(metrics.references(row.reference)[0])
    if count > MEASURED_ROWS:
        prompt_tokens = round(prompt_tokens * count / MEASURED_ROWS)
    identity = data_identity("eval", item.data, SourceReport(source, rows=count, format="prompt_reference",
                                                             variant="standard"))
    generates = metrics.generates(names)
    max_new = item.max_new_tokens or evals.generation.max_new_tokens
    generation = evals.generation.model_dump(mode="json", exclude={"chat_template"})
    content = {"kind": "set", "data": identity.sha256, "set": item.model_dump(mode="json", exclude={"name", "data",
                                                                                                   "during"}),
               "generation": generation, "chat_template": encoder.use_chat_template, "runner": __version__,
               "schemas": [file_sha256(folder / m.settings.file) for m in item.metrics
                           if m.name == "json_schema" and m.settings.file],
               "seed": seed if evals.generation.temperature > 0 else None}
    return EvalItem(name=item.name, kind="set", data=identity, metrics=names, rows=count, generates=generates,
                    max_new_tokens=max_new, prompt_tokens=prompt_tokens,
                    new_tokens=count * max_new if generates else 0, during=item.during, content_sha256=_hash(content))


def _plan_task(task: EvalTask, folder: Path) -> EvalItem:
    if tasks.lm_eval_folder() is None:
        raise RunnerError(f"evals.tasks {task.label}: lm-eval is not installed", f"install it: {pip_install(tasks.EXTRA)}")
    include = folder / task.include_path if task.include_path else None
    try:
        found, _ = tasks.find_task(task.task, include)
    except (tasks.TaskFileError, OSError) as error:
        raise RunnerError(f"evals.tasks {task.label}: {error}") from None
    if found is None:
        raise RunnerError(f"evals.tasks {task.label}: no task '{task.task}'", "see: runner validate")
    if found.dataset is not None and not tasks.dataset_cached(found.dataset):
        raise RunnerError(f"task {task.task} reads the hub dataset {found.dataset}, which is not in the datasets "
                          f"cache ({tasks.datasets_cache()}); runner never downloads",
                          f"fetch it where the hub is reachable: {tasks.fetch_command(found)} (set "
                          "HF_DATASETS_CACHE to use another cache)")
    documents = None if found.is_group else tasks.documents(found, task.limit)
    shots = task.num_fewshot if task.num_fewshot is not None else found.config.get("num_fewshot") or 0
    context = TASK_CONTEXT_TOKENS * (1 + (shots if isinstance(shots, int) else 0))
    generates = found.output_type == "generate_until"
    requests = tasks.ASSUMED_CHOICES if found.output_type == "multiple_choice" else 1
    data_files = sorted(str(path) for paths in found.data_files().values() for path in paths)
    content = {"kind": "task", "task": task.model_dump(mode="json", exclude={"name"}),
               "config": json.dumps(found.config, sort_keys=True, default=str),
               "files": [file_sha256(Path(path)) for path in data_files if Path(path).is_file()],
               "lm_eval": _version("lm-eval"), "runner": __version__}
    return EvalItem(name=task.label, kind="task", task=task.task, task_file=str(found.path),
                    output_type=found.output_type, dataset=found.dataset, metrics=found.metrics, rows=documents,
                    generates=generates, max_new_tokens=found.max_gen_tokens if generates else 0,
                    prompt_tokens=None if documents is None else documents * requests * context,
                    new_tokens=(documents or 0) * found.max_gen_tokens if generates else 0,
                    content_sha256=_hash(content))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
