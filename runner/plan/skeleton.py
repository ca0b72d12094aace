"""The model's skeleton on the meta device: parameter names and shapes, no weights."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from runner.methods.registry import CAUSAL_LM, SCORE
from runner.plan.models import ModelFacts


@dataclass
class Skeleton:
    shapes: dict[str, tuple[int, ...]]
    tied: dict[str, str]
    """Names that share another parameter (lm_head.weight -> model.embed_tokens.weight)."""
    facts: ModelFacts
    quantizable: tuple[str, ...] = ()
    """The weights a quantized base stores in 4 or 8 bits: those of the linear layers that transformers'
    bitsandbytes integration converts (not the output head, nor what is tied to it)."""


def model_class(head: str):
    """The transformers class of a model head (runner.methods.registry): a causal LM, or a model with one
    scalar score per sequence."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {CAUSAL_LM: AutoModelForCausalLM, SCORE: AutoModelForSequenceClassification}[head]


def build(config, head: str) -> Skeleton:
    import torch

    if head == SCORE:
        config = copy.deepcopy(config)
        config.num_labels = 1
    with torch.device("meta"):
        model = model_class(head).from_config(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return Skeleton(shapes, tied_parameters(model), facts_of(config, shapes), quantizable(model))


def quantizable(model) -> tuple[str, ...]:
    """The weights `from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` converts: plain
    linear layers, less the modules transformers keeps in full precision (the same rule, called here)."""
    from torch import nn
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    kept = get_keys_to_not_convert(model)
    return tuple(f"{name}.weight" for name, module in model.named_modules()
                 if type(module) is nn.Linear and should_convert_module(name, kept))


def tied_parameters(model) -> dict[str, str]:
    """Parameters that named_parameters() hides because they are another parameter."""
    by_identity = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        by_identity.setdefault(id(parameter), []).append(name)
    return {alias: names[0] for names in by_identity.values() for alias in names[1:]}


def facts_of(config, shapes: dict[str, tuple[int, ...]]) -> ModelFacts:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", 1)
    return ModelFacts(
        architecture=(getattr(text, "architectures", None) or [text.model_type])[0],
        num_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        intermediate_size=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        num_attention_heads=heads,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        vocab_size=text.vocab_size,
        max_positions=getattr(text, "max_position_embeddings", None),
        total_parameters=sum(math.prod(shape) for shape in shapes.values()),
        tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
    )
