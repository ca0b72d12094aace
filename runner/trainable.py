"""What is trained: one selection over parameter *names*, shared by every stage.

The validator calls `select` on names read from safetensors headers, the planner on the
names of a meta-device model, the executor on the real model. Same function, same
answer: what the plan shows is what the run trains. No torch here.

Vocabulary:
- `layers` picks transformer blocks (`all`, `last:N`, `first:N`, `"20-23"`, `[0, 3, "5-7"]`).
- `modules` narrows the parameters inside those blocks: module families
  (attention, mlp, norm) or parameter-name globs (`*.q_proj.*`).
- `also` adds parameters anywhere in the model, trained in full: families
  (embeddings, lm_head, norm) or globs.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MODES = ("full", "freeze", "lora")
MAX_LAYERS = 100_000
"""More transformer blocks than any model has (the largest have about 100): a count beyond it is a
broken or hostile file, refused before any range of layers is formed from it."""

FAMILIES: dict[str, str] = {
    "attention": "the attention projections of each block (q/k/v/o)",
    "mlp": "the feed-forward network of each block",
    "norm": "the normalisation layers",
    "embeddings": "token (and position) embeddings",
    "lm_head": "the output projection to the vocabulary",
}
DEFAULT_LORA_MODULES = ("attention", "mlp")
NEW_HEADS: dict[str, tuple[str, ...]] = {"reward": ("score.weight",)}
"""Parameters a method adds to the base model; they start untrained, so they are always trained."""

_ATTENTION = {"self_attn", "attn", "attention", "self_attention", "cross_attn"}
_MLP = {"mlp", "feed_forward", "ffn", "block_sparse_moe", "moe"}
_EMBEDDINGS = {"embed_tokens", "wte", "wpe", "embed_positions", "word_embeddings", "embed_in",
               "position_embeddings", "token_type_embeddings", "tok_embeddings"}
_LM_HEAD = {"lm_head", "embed_out"}
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_GLOB_CHARS = set("*?[.")


class SelectionError(ValueError):
    """A layer or module selection that cannot be read or applied; the message says why."""


def layer_of(name: str) -> int | None:
    match = _LAYER.search(name)
    if not match:
        return None
    digits = match.group(1)
    return int(digits) if len(digits) <= 12 else 10**12  # never convert megabytes of digits


def split_at_layer(name: str) -> tuple[str, int, str] | None:
    """`model.layers.3.mlp.up_proj.weight` -> ("model.layers.", 3, ".mlp.up_proj.weight"); None outside the blocks."""
    match = _LAYER.search(name)
    if not match:
        return None
    return name[:match.start(1)], int(match.group(1)), name[match.end(1):]


def family_of(name: str) -> str | None:
    parts = name.split(".")
    if any(part in _LM_HEAD for part in parts) or (parts[0] == "output" and len(parts) == 2):
        return "lm_head"
    if any(part in _EMBEDDINGS for part in parts):
        return "embeddings"
    # Norms first: `post_attention_layernorm` is a norm, not attention.
    if any("norm" in part or part.startswith("ln") for part in parts[:-1]):
        return "norm"
    if any(part in _ATTENTION for part in parts):
        return "attention"
    if any(part in _MLP for part in parts):
        return "mlp"
    return None


def is_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS & set(pattern))


def check_module_pattern(pattern: str) -> None:
    """Raise SelectionError for a bare word that is no family (a typo, most likely)."""
    if is_glob(pattern) or pattern in FAMILIES:
        return
    close = difflib.get_close_matches(pattern, FAMILIES, n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise SelectionError(
        f"'{pattern}' is not a module family ({', '.join(FAMILIES)}); {suggestion}"
        f"for parameter names use a glob such as '*.{pattern}.*'")


def matches(name: str, pattern: str) -> bool:
    if pattern in FAMILIES:
        return family_of(name) == pattern
    return fnmatch.fnmatchcase(name, pattern)


# --- layers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSelection:
    """A parsed `layers` value; `indices` needs the model's layer count. Explicit layers are kept as
    sorted, disjoint, inclusive ranges and reasoned about arithmetically: a range like "0-99999999999"
    is refused against the model's size, never materialised."""

    kind: str  # all | last | first | explicit
    count: int = 0
    ranges: tuple[tuple[int, int], ...] = ()

    def indices(self, num_layers: int) -> tuple[int, ...]:
        if num_layers > MAX_LAYERS:
            raise SelectionError(f"the model claims {num_layers:,} layers; not a plausible model "
                                 f"(at most {MAX_LAYERS:,})")
        if self.kind == "all":
            return tuple(range(num_layers))
        if self.kind in ("last", "first"):
            if self.count > num_layers:
                raise SelectionError(
                    f"{self.kind}:{self.count} asks for {self.count} layers; the model has {num_layers} "
                    f"(0-{num_layers - 1})")
            return tuple(range(num_layers - self.count, num_layers)) if self.kind == "last" \
                else tuple(range(self.count))
        if self.ranges[-1][1] >= num_layers:
            first = next(max(start, num_layers) for start, end in self.ranges if end >= num_layers)
            raise SelectionError(
                f"layer {first} does not exist; the model has {num_layers} layers (0-{num_layers - 1})")
        return tuple(index for start, end in self.ranges for index in range(start, end + 1))

    def describe(self) -> str:
        if self.kind in ("last", "first"):
            return f"{self.kind}:{self.count}"
        if self.kind == "all":
            return "all"
        return ", ".join(str(start) if start == end else f"{start}-{end}" for start, end in self.ranges)


ALL_LAYERS = LayerSelection("all")
LAYERS_HELP = "all, last:N, first:N, a range like \"20-23\", or a list such as [0, 3, \"5-7\"]"


def parse_layers(value: object) -> LayerSelection:
    if isinstance(value, bool):
        raise SelectionError(f"expected {LAYERS_HELP}")
    if isinstance(value, int):
        return _explicit([(_index(value), _index(value))])
    if isinstance(value, list):
        if not value:
            raise SelectionError(f"the layer list is empty; expected {LAYERS_HELP}")
        ranges: list[tuple[int, int]] = []
        for item in value:
            part = parse_layers(item) if isinstance(item, (int, str)) else None
            if part is None or part.kind != "explicit":
                raise SelectionError(f"list items must be layer indices or ranges like \"5-7\", not {item!r}")
            ranges.extend(part.ranges)
        return _explicit(ranges)
    if not isinstance(value, str):
        raise SelectionError(f"expected {LAYERS_HELP}")
    text = value.strip()
    if text == "all":
        return ALL_LAYERS
    match = re.fullmatch(r"(last|first):\s*(\d{1,18})", text)
    if match:
        count = int(match.group(2))
        if count < 1:
            raise SelectionError(f"{match.group(1)}:{count} selects no layer; use a count of 1 or more")
        return LayerSelection(match.group(1), count=count)
    match = re.fullmatch(r"(\d{1,18})\s*-\s*(\d{1,18})", text)
    if match:
        start, end = int(match.group(1)), int(match.group(2))
        if end < start:
            raise SelectionError(f"range '{text}' runs backwards; write it as '{end}-{start}'")
        return _explicit([(start, end)])
    if re.fullmatch(r"\d{1,18}", text):
        return _explicit([(int(text), int(text))])
    raise SelectionError(f"'{value[:80]}' is not a layer selection; expected {LAYERS_HELP}")


def _explicit(ranges: list[tuple[int, int]]) -> LayerSelection:
    """Sorted, with overlapping and adjacent ranges merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return LayerSelection("explicit", ranges=tuple(merged))


def _index(value: int) -> int:
    if value < 0:
        raise SelectionError(f"layer index {value} is negative; use last:N to count from the end")
    return value


# --- the selection ------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainablePolicy:
    mode: str = "full"
    layers: LayerSelection = ALL_LAYERS
    modules: tuple[str, ...] = ()
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    trained: tuple[str, ...]
    """Parameters trained in full (in freeze and full modes; `also` in lora mode)."""
    lora_targets: tuple[str, ...]
    """Module names (parameter name without `.weight`) that receive LoRA adapters."""
    frozen: tuple[str, ...]
    layers: tuple[int, ...]
    num_layers: int
    unmatched: tuple[tuple[str, str], ...] = ()
    """(field, pattern) pairs that matched no parameter: always a mistake."""
    tied: tuple[tuple[str, str], ...] = field(default=())
    """(alias, parameter) pairs where a selected name is tied to another parameter."""

    @property
    def trains_anything(self) -> bool:
        return bool(self.trained or self.lora_targets)


def count_layers(names: Sequence[str]) -> int:
    indices = [index for index in map(layer_of, names) if index is not None]
    return max(indices) + 1 if indices else 0


def select(
    shapes: Mapping[str, Sequence[int]],
    policy: TrainablePolicy,
    *,
    num_layers: int | None = None,
    tied: Mapping[str, str] | None = None,
    new: Sequence[str] = (),
) -> Selection:
    """Apply `policy` to the parameters `shapes` (name -> shape).

    `tied` maps names that are not parameters of their own (like `lm_head.weight` in a
    model with tied embeddings) to the parameter they share, so selecting them selects
    that parameter, and the selection says so. `new` names parameters the method adds
    (a reward head): always trained.
    """
    tied = dict(tied or {})
    names = list(shapes)
    num_layers = num_layers if num_layers is not None else count_layers(names)
    layers = policy.layers.indices(num_layers) if num_layers else ()
    unmatched: list[tuple[str, str]] = []
    tied_hits: list[tuple[str, str]] = []

    if policy.mode == "full":
        return Selection(tuple(names), (), (), tuple(range(num_layers)), num_layers)

    in_layers = [name for name in names if layer_of(name) in layers]
    modules = policy.modules or (DEFAULT_LORA_MODULES if policy.mode == "lora" else ())
    scoped = _pick(in_layers, modules, "modules", unmatched) if modules else in_layers

    lora_targets: list[str] = []
    trained: set[str] = set()
    if policy.mode == "lora":
        lora_targets = [name.removesuffix(".weight") for name in scoped
                        if name.endswith(".weight") and len(shapes[name]) == 2]
        if modules and scoped and not lora_targets:
            unmatched.append(("modules", ", ".join(modules) + " (no linear layers)"))
    else:
        trained.update(scoped)

    for pattern in policy.also:
        hits = [name for name in names if matches(name, pattern)]
        hits += [canonical for alias, canonical in tied.items() if matches(alias, pattern)]
        tied_hits += [(alias, canonical) for alias, canonical in tied.items() if matches(alias, pattern)]
        if not hits:
            unmatched.append(("also", pattern))
        trained.update(hits)

    trained.update(name for name in new if name in shapes)
    ordered = tuple(name for name in names if name in trained)
    frozen = tuple(name for name in names if name not in trained)
    return Selection(ordered, tuple(lora_targets), frozen, layers, num_layers,
                     tuple(unmatched), tuple(tied_hits))


def _pick(names: list[str], patterns: Sequence[str], field_name: str,
          unmatched: list[tuple[str, str]]) -> list[str]:
    picked: set[str] = set()
    for pattern in patterns:
        hits = [name for name in names if matches(name, pattern)]
        if not hits:
            unmatched.append((field_name, pattern))
        picked.update(hits)
    return [name for name in names if name in picked]


def describe_names(names: Sequence[str], limit: int = 12) -> str:
    """A short, readable list of parameter names, collapsing the per-layer repetition."""
    shown: list[str] = []
    for name in names:
        generic = _LAYER.sub(lambda m: m.group(0).replace(m.group(1), "N"), name)
        if generic not in shown:
            shown.append(generic)
    more = f", ... ({len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more
