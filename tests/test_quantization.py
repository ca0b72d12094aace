"""The stored size of a quantized weight, against what bitsandbytes really allocates (on the CPU)."""

import pytest

from runner.quantization import Storage


@pytest.mark.parametrize("storage", [Storage(4, "nf4", True), Storage(4, "fp4", False), Storage(8)])
def test_stored_bytes_match_bitsandbytes(storage, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from runner.execute.loading import bitsandbytes_config, quantized_names
    from runner.plan.models import QuantizedBase

    quantized = QuantizedBase(bits=storage.bits, type=storage.type, double_quant=storage.double_quant,
                              compute_dtype="fp32", quantized=[], stored_bytes=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=bitsandbytes_config(quantized))
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    shapes = {name: tuple(p.shape) for name, p in plain.named_parameters()}
    parameters = dict(model.named_parameters())
    for name in quantized_names(model):
        weight = parameters[name]
        held = weight.numel() * weight.element_size()
        if storage.bits == 4:
            state = weight.quant_state
            held += sum(t.numel() * t.element_size() for t in (state.absmax, *(
                [state.state2.absmax] if state.nested else [])))
        else:
            held += weight.SCB.numel() * weight.SCB.element_size()
        assert storage.weight_bytes(*shapes[name]) == pytest.approx(held, abs=4), name


def test_descriptions():
    assert Storage(4, "nf4", True, "bf16").describe() == "4-bit NF4, double quant, compute bf16 (bitsandbytes)"
    assert Storage(8).short == "int8" and Storage(4, "fp4", False).short == "fp4"
