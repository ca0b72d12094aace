"""Rows -> training examples, with the plan's loss mask. Unusable rows are kept, with a reason.

The same sources (runner.data), row checks (runner.formats), mixing (runner.data.mixing) and
encoder (runner.encoding.tokens.RowEncoder) as `runner validate` and the plan: nothing is decided twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.data import mixing
from runner.errors import RunnerError
from runner.formats import RowError
from runner.methods import registry
from runner.plan.models import DataIdentity, Plan
from runner.encoding.rows import KINDS
from runner.encoding.tokens import RowEncoder


class TooManyRejected(RunnerError):
    """More unusable rows than data.max_rejected allows."""


@dataclass
class SourceRows:
    """What one source gave: its rows read, and the examples one epoch takes from it."""

    identity: DataIdentity
    rows: int = 0
    used: int = 0
    """Examples one epoch takes (repeats included)."""
    rejected: int = 0


@dataclass
class Split:
    role: str
    sources: list[SourceRows] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    """One epoch's examples: for train, every source's by its weight (the loop shuffles them)."""
    rejected: list[dict] = field(default_factory=list)
    """{"file", "line" or "row", "reason"} for each row that cannot be used."""

    @property
    def rows(self) -> int:
        return sum(source.rows for source in self.sources)


def encoder_for(plan: Plan, tokenizer) -> RowEncoder:
    return RowEncoder(tokenizer, use_chat_template=plan.settings.data.chat_template.value,
                      loss_on=plan.settings.training.loss_on.value, max_length=plan.settings.training.max_length.value)


def prepare(plan: Plan, tokenizer) -> dict[str, Split]:
    encoder = encoder_for(plan, tokenizer)
    kind = KINDS[registry.get(plan.method).rows]
    seed = plan.settings.training.seed.value
    splits: dict[str, Split] = {}
    for data in plan.inputs.data:
        split = splits.setdefault(data.role, Split(data.role))
        position = len(split.sources)
        part = SourceRows(data)
        usable: list[dict | None] = []  # by position among the source's usable rows; None: fails to encode
        for at, row, problem in data.row_source().rows(data.format):
            part.rows += 1
            try:
                if problem:
                    raise RowError(problem)
                example = kind.example(encoder, row, data.format)
            except RowError as error:
                split.rejected.append({**at.to_json(), "reason": str(error)})
                part.rejected += 1
                if not problem:
                    usable.append(None)
                continue
            usable.append(example)
        chosen = mixing.selection(len(usable), data.weight, seed, position) if data.role == "train" \
            else range(len(usable))
        taken = [usable[ordinal] for ordinal in chosen if usable[ordinal] is not None]
        part.used = len(taken)
        split.examples += taken
        split.sources.append(part)
    for split in splits.values():
        _check_rejected(plan, split)
    return splits


def _check_rejected(plan: Plan, split: Split) -> None:
    share = len(split.rejected) / max(split.rows, 1)
    if share > plan.settings.data.max_rejected.value:
        first = split.rejected[0]
        where = f"line {first['line']}" if "row" not in first else f"row index {first['row']}"
        raise TooManyRejected(
            f"{len(split.rejected)} of {split.rows} {split.role} rows cannot be used ({share:.1%}, allowed "
            f"{plan.settings.data.max_rejected.value:.1%}); first: {first['file']} {where}: {first['reason']}",
            "see rejected.jsonl in the run directory; fix the rows or raise data.max_rejected")
    if not split.examples:
        raise TooManyRejected(f"no usable {split.role} rows")


def _shown_prompt(row: dict) -> str | None:
    """What a person asked, for the before/after table: the prompt text, or the last user turn."""
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    messages = row.get("messages") or (row.get("input") or {}).get("messages") or row.get("prompt") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if "messages" in row:
        last_answer = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        users = [m for m in messages[:last_answer] if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return content if isinstance(content, str) else None


def sample_prompts(plan: Plan, encoder: RowEncoder, limit: int = 3) -> list[tuple[str, str]]:
    """(shown prompt, rendered prompt) for before/after samples: the spec's `samples`, else eval/train rows."""
    if plan.spec.get("samples"):
        return [(text, encoder.prompt_text({"prompt": text}, "prompt_only")) for text in plan.spec["samples"]]
    chosen = []
    for data in sorted(plan.inputs.data, key=lambda d: d.role != "eval"):
        for _, row, problem in data.row_source().rows(data.format):
            if len(chosen) >= limit:
                break
            if problem is None:
                rendered = encoder.prompt_text(row, data.format)
                chosen.append((_shown_prompt(row) or rendered, rendered))
        if chosen:
            break
    return chosen
