"""Rows -> training examples, with the plan's loss mask. Unusable rows are kept, with a reason.

The same row checks as `runner validate` (runner.formats) and the same encoder as the
plan's preview (runner.plan.tokens.RowEncoder): nothing is decided twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runner import formats
from runner.errors import RunnerError
from runner.formats import RowError
from runner.methods import registry
from runner.plan.models import Plan
from runner.plan.rows import KINDS
from runner.plan.tokens import RowEncoder


class TooManyRejected(RunnerError):
    """More unusable rows than data.max_rejected allows."""


@dataclass
class Split:
    role: str
    path: Path
    rows: int = 0
    examples: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    """{"file", "line", "reason"} for each row that cannot be used."""


def encoder_for(plan: Plan, tokenizer) -> RowEncoder:
    return RowEncoder(tokenizer, use_chat_template=plan.value("data.chat_template"),
                      loss_on=plan.value("training.loss_on"), max_length=plan.value("training.max_length"))


def prepare(plan: Plan, tokenizer) -> dict[str, Split]:
    encoder = encoder_for(plan, tokenizer)
    kind = KINDS[registry.get(plan.method).rows]
    splits = {}
    for data in plan.inputs.data:
        split = Split(data.role, Path(data.path))
        for line, row, problem in formats.read_rows(split.path, data.format):
            split.rows += 1
            try:
                if problem:
                    raise RowError(problem)
                split.examples.append(kind.example(encoder, row, data.format))
            except RowError as error:
                split.rejected.append({"file": str(split.path), "line": line, "reason": str(error)})
        share = len(split.rejected) / max(split.rows, 1)
        if share > plan.value("data.max_rejected"):
            first = split.rejected[0]
            raise TooManyRejected(
                f"{len(split.rejected)} of {split.rows} {data.role} rows cannot be used ({share:.1%}, allowed "
                f"{plan.value('data.max_rejected'):.1%}); first: line {first['line']}: {first['reason']}",
                "see rejected.jsonl in the run directory; fix the rows or raise data.max_rejected")
        if not split.examples:
            raise TooManyRejected(f"no usable {data.role} rows")
        splits[data.role] = split
    return splits


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
        for _, row, problem in formats.read_rows(Path(data.path), data.format):
            if problem is None and len(chosen) < limit:
                rendered = encoder.prompt_text(row, data.format)
                chosen.append((_shown_prompt(row) or rendered, rendered))
        if chosen:
            break
    return chosen
