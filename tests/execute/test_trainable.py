"""The LoRA variants as PEFT documents them, through runner's own apply() and optimizer(): rsLoRA's
scale, DoRA's magnitudes, LoRA+'s learning rate for B; and a quantized base that stays unchanged."""

import pytest
import torch

from runner.execute import loading, trainable
from runner.methods import registry
from tests.helpers import plan_of


def adapted(tiny_project, lora: str, extra: str = ""):
    plan = plan_of(tiny_project, f"trainable:\n  mode: lora\n  lora: {{{lora}}}\n{extra}")
    model = loading.load_base(plan, registry.get(plan.method).head)
    return plan, trainable.apply(model, plan)


def q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def test_rslora_scales_by_alpha_over_the_square_root_of_r(tiny_project):
    for rslora, scale in ((False, 16 / 16), (True, 16 / 4)):
        plan, model = adapted(tiny_project, f"r: 16, alpha: 16, rslora: {str(rslora).lower()}")
        assert q_proj(model).scaling["default"] == pytest.approx(scale) == plan.trainable.lora.scaling


def test_dora_trains_a_magnitude_per_output_started_at_the_weight_norm(tiny_project, tiny_model_dir):
    plan, model = adapted(tiny_project, "r: 4, dora: true")
    layer = q_proj(model)
    magnitude = layer.lora_magnitude_vector["default"].weight
    weight = layer.base_layer.weight
    assert magnitude.requires_grad and magnitude.shape == (weight.shape[0],)
    assert torch.allclose(magnitude, weight.norm(dim=1))  # ||W|| per output row, before any step
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trained == plan.trainable.lora.adapter_parameters == plan.trainable.trainable_parameters
    ids = torch.randint(3, 300, (2, 8))
    before = magnitude.detach().clone()
    optimizer = trainable.optimizer(model, plan.trainable.lora, 1e-2)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert not torch.equal(before, magnitude.detach())


def test_loraplus_moves_b_at_ratio_times_the_learning_rate(tiny_project):
    """Adam's first step moves each weight by about the learning rate; B starts at zero and A gets no gradient
    through a zero B, so after one step |delta B| is the learning rate of B's group."""
    learning_rate = 1e-3

    def first_step(lora: str):
        torch.manual_seed(0)
        plan, model = adapted(tiny_project, lora)
        optimizer = trainable.optimizer(model, plan.trainable.lora, learning_rate)
        ids = torch.randint(3, 300, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        return q_proj(model).lora_B["default"].weight.abs().max().item(), optimizer

    plain, _ = first_step("r: 4, dropout: 0")
    boosted, optimizer = first_step("r: 4, dropout: 0, loraplus_lr_ratio: 16")
    assert plain == pytest.approx(learning_rate, rel=0.01)
    assert boosted == pytest.approx(16 * learning_rate, rel=0.01)
    rates = {group["lr"] for group in optimizer.param_groups if group["params"]}
    assert rates == {learning_rate, 16 * learning_rate}


def test_a_quantized_base_trains_adapters_and_its_4bit_weights_stay_unchanged(tiny_project, monkeypatch):
    # as on a CPU with AVX512-BF16, where bitsandbytes would repack each 4-bit weight at its first forward
    # without gradients (runner.execute.loading.keep_stored_layout): the case is tested on every CPU
    monkeypatch.setattr("bitsandbytes.nn.modules.has_avx512bf16", lambda: True)
    plan, model = adapted(tiny_project, "r: 4", "  quantize: {bits: 4, type: nf4, double_quant: true}\n")
    assert type(q_proj(model).base_layer).__name__ == "Linear4bit"
    before = trainable.fingerprints(model)
    model.eval()
    with torch.no_grad():  # a sample before training
        model(input_ids=torch.randint(3, 300, (1, 8)))
    model.train()
    optimizer = trainable.optimizer(model, plan.trainable.lora, 1e-2)
    for step in range(2):
        ids = torch.randint(3, 300, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        if step == 0:  # the gradient reaches every adapter, through every quantized layer after it
            starved = [name for name, parameter in model.named_parameters()
                       if ".lora_B." in name and (parameter.grad is None or not parameter.grad.any())]
            assert starved == []
        optimizer.step()
        optimizer.zero_grad()
    assert trainable.compare(before, trainable.fingerprints(model), trainable.adapters_changed(model),
                             plan).changed == []
    # the proof covers the quantization constants: a changed block scale is a changed weight
    weight = q_proj(model).base_layer.weight
    weight.quant_state.absmax[0] += 1
    assert trainable.fingerprints(model)["model.layers.0.self_attn.q_proj.weight"] != \
        before["model.layers.0.self_attn.q_proj.weight"]
