"""Packed batches compute exactly what the same rows compute one by one."""

import random

import pytest
import torch

from runner.execute.batches import step_micro_batches
from runner.methods.sft import _loss
from runner.encoding.packing import layouts, pack


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))


def examples(count=7, seed=1):
    generator = random.Random(seed)
    rows = []
    for index in range(count):
        length = generator.randint(3, 20)
        ids = [generator.randint(1, 96) for _ in range(length)]
        prompt = generator.randint(0, length - 2) if index % 2 else 0  # completion-only, or every token
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def gradients_of(model, rows, **layout):
    model.zero_grad()
    micros, targets, tokens = step_micro_batches(rows, pad_id=0, max_length=32, **layout)
    loss = sum(_loss(model, micro, targets) for micro in micros)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, tokens


def one_by_one(model, rows):
    model.zero_grad()
    targets = sum(sum(1 for label in row["labels"][1:] if label != -100) for row in rows)
    total = 0
    for row in rows:
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
        logits = model(input_ids=ids, use_cache=False).logits
        total = total + torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100,
                                                          reduction="sum") / targets
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("packing, micro", [(True, 1), (True, 2), (False, 3)])
def test_packed_and_padded_batches_match_one_by_one(packing, micro):
    model, rows = tiny_llama(), examples()
    reference_loss, reference = one_by_one(model, rows)
    loss, grads, tokens = gradients_of(model, rows, micro=micro, packing=packing)
    assert tokens == sum(len(row["input_ids"]) for row in rows)
    assert torch.allclose(loss, reference_loss, atol=1e-6)
    for name, grad in grads.items():
        assert torch.allclose(grad, reference[name], atol=1e-6), name


def test_packing_really_packs_and_a_cache_would_leak():
    model, rows = tiny_llama(), examples()
    micros, _, _ = step_micro_batches(rows, micro=8, packing=True, max_length=32, pad_id=0)
    assert len(micros) == 1 and micros[0].input_ids.shape[0] < len(rows)  # several rows share a block
    micro = micros[0]
    with torch.no_grad():
        isolated = model(input_ids=micro.input_ids, position_ids=micro.position_ids, use_cache=False).logits
        leaking = model(input_ids=micro.input_ids, position_ids=micro.position_ids, use_cache=True).logits
    assert (isolated - leaking).abs().max() > 1e-3  # pitfall: the default cache attends across documents


def test_two_ranks_split_one_layout():
    rows = examples(9)
    both = [step_micro_batches(rows, micro=1, packing=True, max_length=32, pad_id=0, rank=r, world=2) for r in (0, 1)]
    assert len(both[0][0]) == len(both[1][0]) and both[0][1:] == both[1][1:]
    seen = sum(micro.tokens for micros, _, _ in both for micro in micros)
    assert seen == sum(len(row["input_ids"]) for row in rows)


def test_first_fit_and_layout_shares():
    assert pack([5, 4, 3, 2, 8], 8) == [[0, 2], [1, 3], [4]]
    measured = layouts([10, 100, 10, 100, 10, 10, 10, 10], batch=8, micro=4, max_length=128)
    assert measured.packed > measured.padded and measured.blocks_per_step == 3
