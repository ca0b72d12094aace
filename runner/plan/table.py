"""The trainable-parameter table: per block range and module family, trained or frozen, and how much."""

from __future__ import annotations

import math
from collections.abc import Mapping

from runner import trainable
from runner.plan.models import LoraPlan, QuantizedBase, TrainablePlan, TrainableRow
from runner.trainable import Selection


def build(shapes: Mapping[str, tuple[int, ...]], selection: Selection, *, mode: str,
          lora: dict | None = None, new: tuple[str, ...] = (), tied: Mapping[str, str] | None = None,
          quantized: QuantizedBase | None = None) -> TrainablePlan:
    targets = set(selection.lora_targets)
    trained = set(selection.trained)
    stored = set(quantized.quantized) if quantized else set()
    storage = quantized.storage().short if quantized else ""

    def status(name: str) -> str:
        if name in trained:
            return "trained"
        return "lora" if name.removesuffix(".weight") in targets else "frozen"

    rows = _rows(shapes, status, lambda name: storage if name in stored else "")
    total = sum(math.prod(shape) for shape in shapes.values())
    adapter = sum(adapter_parameters(shapes[target + ".weight"], lora["r"], lora.get("dora", False))
                  for target in selection.lora_targets) if lora else 0
    trained_count = sum(math.prod(shapes[name]) for name in selection.trained)
    trainable_count = trained_count + adapter
    lora_plan = LoraPlan(targets=list(selection.lora_targets), adapter_parameters=adapter, **lora) if lora else None
    return TrainablePlan(
        mode=mode, total_parameters=total, trainable_parameters=trainable_count,
        trainable_percent=round(100 * trainable_count / max(total, 1), 4), table=rows,
        trained=list(selection.trained), lora=lora_plan, quantized=quantized,
        notes=_notes(shapes, selection, new, tied or {}), lowest_trained_layer=lowest_trained_layer(selection),
    )


def adapter_parameters(shape: tuple[int, ...], r: int, dora: bool) -> int:
    """A (r x in) and B (out x r); DoRA adds a magnitude per output."""
    rows, columns = shape
    return r * (rows + columns) + (rows if dora else 0)


def lowest_trained_layer(selection: Selection) -> int | None:
    """The lowest block the backward pass must reach (0 when the input embedding is trained)."""
    if any(trainable.family_of(name) == "embeddings" for name in selection.trained):
        return 0
    layers = [trainable.layer_of(name) for name in (*selection.trained, *selection.lora_targets)]
    layers = [layer for layer in layers if layer is not None]
    return min(layers) if layers else None


def _rows(shapes: Mapping[str, tuple[int, ...]], status, storage) -> list[TrainableRow]:
    before, after, blocks = [], [], {}
    seen_block = False
    for name, shape in shapes.items():
        layer = trainable.layer_of(name)
        family = trainable.family_of(name) or "other"
        key = (family, status(name), storage(name))
        if layer is None:
            (after if seen_block else before).append((key, math.prod(shape), name))
            continue
        seen_block = True
        blocks.setdefault(key, {}).setdefault(layer, []).append((math.prod(shape), name))

    rows = [_top_row(*entry) for entry in _merge_top(before)]
    block_rows = []
    for (family, state, stored), per_layer in blocks.items():
        for first, last, count, names in _ranges(per_layer):
            text = str(first) if first == last else f"{first}-{last}"
            block_rows.append((first, TrainableRow(layers=text, family=family, status=state,
                                                   parameters=count * (last - first + 1), storage=stored,
                                                   names=trainable.describe_names(names))))
    rows += [row for _, row in sorted(block_rows, key=lambda item: item[0])]
    rows += [_top_row(*entry) for entry in _merge_top(after)]
    return rows


def _merge_top(entries):
    merged: dict[tuple[str, str, str], list] = {}
    for key, count, name in entries:
        merged.setdefault(key, [0, []])
        merged[key][0] += count
        merged[key][1].append(name)
    return [(key, count, names) for key, (count, names) in merged.items()]


def _top_row(key: tuple[str, str, str], count: int, names: list[str]) -> TrainableRow:
    family, state, stored = key
    return TrainableRow(layers="-", family=family, status=state, parameters=count, storage=stored,
                        names=", ".join(names))


def _ranges(per_layer: dict[int, list[tuple[int, str]]]):
    """Consecutive layers with the same parameters, as (first, last, count per layer, names)."""
    ordered = sorted(per_layer)
    start = ordered[0]
    for previous, layer in zip(ordered, ordered[1:] + [None]):
        signature = _signature(per_layer[previous])
        if layer is None or layer != previous + 1 or _signature(per_layer[layer]) != signature:
            names = [name for _, name in per_layer[start]]
            yield start, previous, sum(count for count, _ in per_layer[start]), names
            start = layer


def _signature(entries: list[tuple[int, str]]) -> tuple:
    return tuple((count, trainable.describe_names([name])) for count, name in entries)


def _notes(shapes, selection: Selection, new: tuple[str, ...], tied: Mapping[str, str]) -> list[str]:
    notes = []
    selected_aliases = {alias for alias, _ in selection.tied}
    for alias, canonical in tied.items():
        if alias not in selected_aliases:
            notes.append(f"{alias} is tied to {canonical} (one matrix): it is trained exactly when {canonical} is")
    for alias, canonical in selection.tied:
        size = math.prod(shapes[canonical])
        notes.append(f"{alias} is tied to {canonical}: training it trains the input embedding too "
                     f"({size / 1e6:.1f}M parameters), and gradients flow through every block")
    for name in new:
        if name in shapes:
            notes.append(f"{name} is new (it starts untrained), so it is always trained")
    lowest = lowest_trained_layer(selection)
    if lowest is None and selection.trains_anything:
        notes.append("no block is trained: the backward pass stops above the blocks")
    elif lowest:
        notes.append(f"blocks 0-{lowest - 1} are frozen with nothing trained below them: the backward pass "
                     f"stops at block {lowest}")
    return notes
