"""What each kind of row becomes: a training example (executor), a token count and a loss-mask preview
(planner). The kinds are the registry's (SUPERVISED, PAIRS, UNPAIRED, PROMPTS); a method's descriptor
names its kind, so the planner and the executor never look at the method itself.

Every function raises RowError for a row it cannot encode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from runner.methods.registry import PAIRS, PROMPTS, SUPERVISED, UNPAIRED, MethodDescriptor
from runner.plan.models import MaskedExample, TokenSpan
from runner.encoding.tokens import Encoded, RowEncoder


@dataclass(frozen=True)
class RowKind:
    example: Callable[[RowEncoder, dict, str], dict]
    """(encoder, row, format) -> the example in the shape the method's trainer takes."""
    measure: Callable[[RowEncoder, dict, str], tuple[int, bool]]
    """(encoder, row, format) -> (tokens of its longest sequence, within the encoder's max_length;
    whether it was cut)."""
    preview: Callable[[RowEncoder, dict, str, dict], list[MaskedExample]]
    """(encoder, row, format, place) -> the row's sequences with the tokens the loss covers marked; `place`
    holds the MaskedExample fields that say where the row is (line, row, source)."""
    parts: int = 1
    """Preview examples per row."""


def mask_rule(descriptor: MethodDescriptor, format_name: str, chat: bool, loss_on: str) -> str:
    wrapped = " (rendered through the chat template)" if chat else ""
    if descriptor.rows == SUPERVISED and loss_on == "all":
        return f"every token of each row{wrapped}"
    return descriptor.rule_text(format_name).format(wrapped=wrapped)


def _capped(encoder: RowEncoder, length: int) -> tuple[int, bool]:
    cut = encoder.max_length is not None and length > encoder.max_length
    return (encoder.max_length if cut else length), cut


# --- supervised: tokens with a loss mask ------------------------------------------------------------

def _supervised_example(encoder: RowEncoder, row: dict, format_name: str) -> dict:
    encoded = encoder.encode_sft(row, format_name)
    return {"input_ids": encoded.input_ids, "labels": encoded.labels()}


def _supervised_measure(encoder: RowEncoder, row: dict, format_name: str) -> tuple[int, bool]:
    encoded = encoder.encode_sft(row, format_name)
    return len(encoded.input_ids), encoded.truncated


def _supervised_preview(encoder: RowEncoder, row: dict, format_name: str, place: dict) -> list[MaskedExample]:
    return [masked_example(encoder.encode_sft(row, format_name), place, "example")]


# --- pairs: a chosen and a rejected answer ------------------------------------------------------------

def _pair_example(encoder: RowEncoder, row: dict, format_name: str) -> dict:
    encoder.preference(row)  # renders the pair as the trainer will, so a row that cannot be fails here
    return encoder.preference_row(row)


def _pair_measure(encoder: RowEncoder, row: dict, format_name: str) -> tuple[int, bool]:
    prompt, chosen, rejected = encoder.preference(row)
    return _capped(encoder, encoder.count(prompt) + max(encoder.count(chosen), encoder.count(rejected)))


def _pair_preview(encoder: RowEncoder, row: dict, format_name: str, place: dict) -> list[MaskedExample]:
    prompt, chosen, rejected = encoder.preference(row)
    return [text_example(encoder, place, part, [(prompt, False), (answer, True)])
            for part, answer in (("chosen", chosen), ("rejected", rejected))]


# --- unpaired: one answer, labelled desirable or not ---------------------------------------------------

def _unpaired_example(encoder: RowEncoder, row: dict, format_name: str) -> dict:
    encoder.unpaired(row)  # as for pairs: fail here on a row the template cannot render
    return encoder.unpaired_row(row)


def _unpaired_measure(encoder: RowEncoder, row: dict, format_name: str) -> tuple[int, bool]:
    prompt, completion = encoder.unpaired(row)
    return _capped(encoder, encoder.count(prompt) + encoder.count(completion))


def _unpaired_preview(encoder: RowEncoder, row: dict, format_name: str, place: dict) -> list[MaskedExample]:
    prompt, completion = encoder.unpaired(row)
    part = "desirable" if row["label"] else "undesirable"
    return [text_example(encoder, place, part, [(prompt, False), (completion, True)])]


# --- prompts: the policy writes the answer --------------------------------------------------------------

def _prompt_example(encoder: RowEncoder, row: dict, format_name: str) -> dict:
    """The rendered prompt, and the row's other plain values (the columns a reward's checks read, like the
    right answer) as text: one type per column, whatever the rows hold (5, "5")."""
    columns = {key: value if isinstance(value, str) else json.dumps(value) for key, value in row.items()
               if key != "prompt" and isinstance(value, (str, int, float, bool))}
    return {**columns, "prompt": encoder.prompt_text(row, format_name)}


def _prompt_measure(encoder: RowEncoder, row: dict, format_name: str) -> tuple[int, bool]:
    return _capped(encoder, encoder.count(encoder.prompt_text(row, format_name)))


def _prompt_preview(encoder: RowEncoder, row: dict, format_name: str, place: dict) -> list[MaskedExample]:
    return [text_example(encoder, place, "prompt", [(encoder.prompt_text(row, format_name), False)])]


KINDS: dict[str, RowKind] = {
    SUPERVISED: RowKind(_supervised_example, _supervised_measure, _supervised_preview),
    PAIRS: RowKind(_pair_example, _pair_measure, _pair_preview, parts=2),
    UNPAIRED: RowKind(_unpaired_example, _unpaired_measure, _unpaired_preview),
    PROMPTS: RowKind(_prompt_example, _prompt_measure, _prompt_preview),
}


# --- preview pieces ------------------------------------------------------------------------------------

def masked_example(encoded: Encoded, place: dict, part: str) -> MaskedExample:
    spans: list[TokenSpan] = []
    start = 0
    for index in range(1, len(encoded.input_ids) + 1):
        if index == len(encoded.input_ids) or encoded.trained[index] != encoded.trained[start]:
            ids = encoded.input_ids[start:index]
            text = _span_text(encoded, start, index)
            spans.append(TokenSpan(text=text, trained=encoded.trained[start], tokens=len(ids)))
            start = index
    return MaskedExample(**place, part=part, spans=spans, tokens=len(encoded.input_ids),
                         trained_tokens=encoded.trained_tokens)


def _span_text(encoded: Encoded, start: int, end: int) -> str:
    chars = [offset for offset in encoded.offsets[start:end] if offset != (0, 0)]
    if not chars:
        return "<bos>" if start == 0 else ""
    return encoded.text[chars[0][0]:chars[-1][1]]


def text_example(encoder: RowEncoder, place: dict, part: str, pieces: list[tuple[str, bool]]) -> MaskedExample:
    spans = [TokenSpan(text=text, trained=trained, tokens=encoder.count(text)) for text, trained in pieces if text]
    return MaskedExample(**place, part=part, spans=spans, tokens=sum(s.tokens for s in spans),
                         trained_tokens=sum(s.tokens for s in spans if s.trained))
