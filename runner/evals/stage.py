"""Evaluation as a stage: the plan's evals on the base (once per base and eval content: cached), while
training (the `during` sets, every `every` steps), and on the result; per-row files beside the manifest;
then the gates. A run and `runner eval` both evaluate through `Stage`.

    <run>/evals/NAME.base.jsonl      the base's answers and scores, row by row (a task: document by document)
    <run>/evals/NAME.trained.jsonl   the result's
    <run>/evals/results.json         base and result side by side, and the gates (also in the manifest)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import RunnerError
from runner.evals import cache, generation, harness, metrics, rows
from runner.evals.gates import parse_gate
from runner.fsutil import write_atomically
from runner.manifest import BestModel, EvalResult, EvalScore, EvalsRecord, GateOutcome
from runner.plan.models import EvalItem, EvalPlan, ModelIdentity
from runner.plan.tokens import RowEncoder
from runner.spec.evals import EvalSet, EvalsSpec, EvalTask

BASE, TRAINED = "base", "trained"


def evals_spec(spec: dict) -> EvalsSpec:
    """The evals section of a plan's spec (as the plan recorded it)."""
    return EvalsSpec.model_validate(spec["evals"])


@dataclass
class Scored:
    """One eval of one model: the mean of each metric, and the rows they are the mean of."""

    scores: dict[str, float]
    rows: list[dict]
    seconds: float
    notes: list[str] = field(default_factory=list)


class Stage:
    def __init__(self, evals: EvalsSpec, plan: EvalPlan, folder: Path, out: Path, *, seed: int = 0,
                 base: ModelIdentity | None = None, record: EvalsRecord | None = None,
                 say: Callable[[str], None] = lambda text: None) -> None:
        """`folder`: where the spec's relative paths resolve (schema files, include_path); `out`: the folder
        the per-row files go to; `base`: the base model's identity (its results are cached by it);
        `record`: results of an earlier attempt of the same run, kept."""
        self.evals, self.plan, self.folder, self.out, self.seed = evals, plan, folder, out, seed
        self.base_identity, self.say = base, say
        self.specs: dict[str, EvalSet | EvalTask] = {item.name: item for item in evals.sets} | {
            task.label: task for task in evals.tasks}
        content = {item.name: item.content_sha256 for item in plan.items}
        self.results: dict[str, EvalResult] = {result.name: result for result in (record.results if record else [])
                                               if content.get(result.name) == result.content_sha256}
        self.best = record.best if record else None

    # --- the three moments -----------------------------------------------------------------------

    def base_pending(self) -> list[EvalItem]:
        """The evals whose base results are neither in this run nor in the cache (then read from it)."""
        pending = []
        for item in self.plan.items:
            if self._has(item.name, BASE):
                continue
            found = cache.read(cache.key(self.base_identity, item)) if self.base_identity else None
            if found is None:
                pending.append(item)
                continue
            summary, rows_file = found
            shutil.copyfile(rows_file, self._rows_path(item.name, BASE))
            self._keep(item, BASE, Scored(summary["scores"], [], summary.get("seconds", 0.0), summary.get("notes", [])),
                       cached=True)
        return pending

    def evaluate_base(self, model, tokenizer) -> None:
        """Evaluate the base on what is not cached, and cache it."""
        for item in self.base_pending():
            scored = self._evaluate(item, model, tokenizer, BASE)
            if self.base_identity is not None:
                cache.write(cache.key(self.base_identity, item), {"scores": scored.scores, "seconds": scored.seconds,
                                                                  "notes": scored.notes},
                            self._rows_path(item.name, BASE))

    def evaluate_result(self, model, tokenizer) -> None:
        for item in self.plan.items:
            self._evaluate(item, model, tokenizer, TRAINED)

    def during(self, model, tokenizer) -> dict[str, float]:
        """The `during` sets on the model being trained: {"eval/NAME/METRIC": score} for metrics.jsonl."""
        found = {}
        for item in self.plan.items:
            if item.during:
                scored = self._score(item, model, tokenizer, "while training")
                found.update({f"eval/{item.name}/{metric}": value for metric, value in scored.scores.items()})
        return found

    def keep_best(self, found: dict[str, float], step: int, save: Callable[[], str], *, final: bool = False) -> None:
        """Keep the model (`save()` writes it and returns its folder's name in the run) when it scores best
        so far on evals.keep_best. The `final` model (saved anyway) wins a tie, and then the copy taken while
        training is removed."""
        if self.plan.keep_best is None:
            return
        name, _, metric = self.plan.keep_best.partition(".")
        value = found.get(f"eval/{name}/{metric}")
        if value is None or math.isnan(value) or (self.best is not None and (
                value < self.best.value if final else value <= self.best.value)):
            return
        self.best = BestModel(metric=self.plan.keep_best, step=step, value=value, path=save())
        if final:
            shutil.rmtree(self.out.parent / "best", ignore_errors=True)

    # --- the record --------------------------------------------------------------------------------

    def record(self) -> EvalsRecord:
        """Base and result side by side, the gates (once the result is evaluated), and the best model."""
        results = [self.results[item.name] for item in self.plan.items if item.name in self.results]
        gates = self.gates() if all(self._has(item.name, TRAINED) for item in self.plan.items) else []
        record = EvalsRecord(results=results, gates=gates, passed=all(g.passed for g in gates) if gates else None,
                             best=self.best)
        write_atomically(self.out / "results.json", record.model_dump_json(indent=2) + "\n")
        return record

    def gates(self) -> list[GateOutcome]:
        outcomes = []
        for text in self.plan.require:
            gate = parse_gate(text)
            result = self.results.get(gate.eval)
            score = result.scores.get(gate.metric) if result else None
            passed, threshold, reason = gate.decide(score.trained if score else None, score.base if score else None)
            outcomes.append(GateOutcome(condition=gate.text, passed=passed, value=score.trained if score else None,
                                        threshold=threshold, reason=reason))
        return outcomes

    def scores_at(self, which: str) -> dict[str, float]:
        """{"eval/NAME/METRIC": score} of the base or the result, for metrics.jsonl and the trackers."""
        return {f"eval/{result.name}/{metric}": getattr(score, which) for result in self.results.values()
                for metric, score in result.scores.items() if getattr(score, which) is not None}

    # --- evaluating one eval -------------------------------------------------------------------------

    def _evaluate(self, item: EvalItem, model, tokenizer, which: str) -> Scored:
        scored = self._score(item, model, tokenizer, f"on the {'base' if which == BASE else 'result'}")
        path = self._rows_path(item.name, which)
        write_atomically(path, "".join(json.dumps(row, default=str) + "\n" for row in scored.rows))
        self._keep(item, which, scored)
        return scored

    def _score(self, item: EvalItem, model, tokenizer, when: str) -> Scored:
        self.say(f"evaluating {item.name} {when}")
        started = time.monotonic()
        spec = self.specs[item.name]
        if item.kind == "task":
            include = self.folder / spec.include_path if spec.include_path else None
            found = harness.evaluate(model, tokenizer, spec.task, include, limit=spec.limit,
                                     num_fewshot=spec.num_fewshot, batch_size=spec.batch_size, seed=self.seed)
            return Scored(found.scores, found.rows, round(time.monotonic() - started, 2))
        scored = self._score_set(item, spec, model, tokenizer)
        scored.seconds = round(time.monotonic() - started, 2)
        return scored

    def _score_set(self, item: EvalItem, spec: EvalSet, model, tokenizer) -> Scored:
        source = item.data.row_source()
        if source.fingerprint()[0] != item.data.sha256:
            raise RunnerError(f"the test set {item.name} ({item.data.source}) changed since the plan was made",
                              "make a new plan (runner plan), or run the spec again")
        needs = any(metric.name in metrics.NEEDS_REFERENCE for metric in spec.metrics)
        found = []
        for _, row, problem in rows.read(source, needs, spec.limit):
            if problem is not None:
                raise RunnerError(f"test set {item.name}: {problem}", "see: runner validate")
            found.append(row)
        encoder = RowEncoder(tokenizer, use_chat_template=self.plan.chat_template, loss_on="completion",
                             max_length=None)
        prompts = [encoder.prompt_text({"prompt": row.prompt}, "prompt_only") for row in found]
        templated = self.plan.chat_template
        generation_spec = self.evals.generation
        said = [generation.Answer("", 0)] * len(found)
        if item.generates:
            said = generation.answers(model, tokenizer, prompts, templated=templated,
                                      max_new_tokens=item.max_new_tokens, temperature=generation_spec.temperature,
                                      stop=spec.stop if spec.stop is not None else generation_spec.stop,
                                      batch_size=generation_spec.batch_size, seed=self.seed)
        likelihoods = [None] * len(found)
        if any(metric.name == "loglikelihood" for metric in spec.metrics):
            likelihoods = generation.loglikelihoods(
                model, tokenizer, [(prompt, metrics.references(row.reference)[0])
                                   for prompt, row in zip(prompts, found)],
                templated=templated, batch_size=generation_spec.batch_size)
        scorer = metrics.Scorer(spec.metrics, self.folder)
        per_row, notes = [], []
        try:
            for row, answer, likelihood in zip(found, said, likelihoods):
                scores, row_notes = scorer.score(answer.text, row.reference, tokens=answer.tokens,
                                                 loglikelihood=likelihood)
                per_row.append({**row.at.to_json(), "prompt": rows.prompt_text(row.prompt),
                                "reference": row.reference, "answer": answer.text, "tokens": answer.tokens,
                                "scores": scores, **({"notes": row_notes} if row_notes else {})})
                notes += [f"{_where(row.at)}: {note}" for note in row_notes]
        finally:
            scorer.close()
        means = {metric.name: _mean([r["scores"][metric.name] for r in per_row]) for metric in spec.metrics}
        return Scored(means, per_row, 0.0, notes[:20])

    def _keep(self, item: EvalItem, which: str, scored: Scored, cached: bool = False) -> None:
        result = self.results.get(item.name) or EvalResult(name=item.name, kind=item.kind, rows=0, scores={},
                                                           content_sha256=item.content_sha256)
        scores = dict(result.scores)
        for metric, value in scored.scores.items():
            score = scores.get(metric, EvalScore())
            score = score.model_copy(update={which: value})
            delta = score.trained - score.base if score.trained is not None and score.base is not None else None
            scores[metric] = score.model_copy(update={"delta": delta})
        update = {"scores": scores, "rows": max(result.rows, len(scored.rows) or result.rows or item.rows or 0),
                  f"{which}_rows": str(self._rows_path(item.name, which).relative_to(self.out.parent)),
                  "seconds": {**result.seconds, which: scored.seconds},
                  "notes": result.notes + [f"{which}: {note}" for note in scored.notes]}
        if which == BASE:
            update["base_cached"] = cached
        self.results[item.name] = result.model_copy(update=update)

    def _has(self, name: str, which: str) -> bool:
        result = self.results.get(name)
        return result is not None and any(getattr(score, which) is not None for score in result.scores.values()) \
            and self._rows_path(name, which).is_file()

    def _rows_path(self, name: str, which: str) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{name}.{which}.jsonl"


def _mean(values: list[float | None]) -> float:
    kept = [value for value in values if value is not None and math.isfinite(value)]
    return round(sum(kept) / len(kept), 6) if kept else float("nan")


def _where(at) -> str:
    return f"line {at.line}" if at.index is None else f"row index {at.index}"
