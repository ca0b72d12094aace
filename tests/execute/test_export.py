"""QLoRA end to end on a tiny Llama (bitsandbytes on the CPU), and `runner export`: the merged folder loads
with transformers alone and gives the run's logits."""

import pytest
import torch

from runner.cli import main
from tests.helpers import FAST, run_spec

QLORA = (FAST + "trainable:\n  mode: lora\n  quantize: {bits: 4, type: nf4, double_quant: true}\n"
         "  lora: {r: 4, dora: true}\n")
SAME_LOGITS = 1e-4
"""fp32 on the CPU: the merged weights are the dequantised ones plus B @ A, so only the order of the
sums differs from the run's (W x + B (A x)); measured ~2e-7."""


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
def test_a_4bit_qlora_run_keeps_its_base_and_exports_a_plain_model(tiny_project, tiny_model_dir, capsys,
                                                                    monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    code, run, manifest = run_spec(tiny_project, QLORA)
    assert code == 0, manifest.error
    assert manifest.parameters.changed == [] and manifest.parameters.adapters_changed == 28
    assert not run.checkpoints.exists() and manifest.checkpoints_removed_bytes > 0  # deleted after success
    assert "4-bit NF4, double quant" in (run.adapter / "README.md").read_text()

    # the adapter loads with plain PEFT on a 4-bit base, as anyone would load it; in the layout it was trained
    # in (on a CPU with AVX512-BF16, bitsandbytes would repack the weights at the first forward, and fail on
    # the tiny model's 32-wide layers: runner.execute.loading.keep_stored_layout)
    monkeypatch.setattr("bitsandbytes.nn.modules.has_avx512bf16", lambda: False)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=config, dtype=torch.float32,
                                                device_map={"": "cpu"})
    trained = PeftModel.from_pretrained(base, run.adapter)

    assert main(["export", str(run.path)]) == 0
    assert "dequantised to fp32" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(run.path / "merged")
    assert not hasattr(merged.config, "quantization_config")
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    difference = (logits(merged, ids) - logits(trained, ids)).abs().max().item()
    assert difference < SAME_LOGITS
    card = (run.path / "merged" / "README.md").read_text()
    assert manifest.run_id in card and manifest.data[0].sha256[:16] in card and "dequantised" in card

    assert main(["export", str(run.path)]) != 0  # never over an existing folder
    assert "already exists" in capsys.readouterr().err


def test_export_refuses_a_run_that_is_already_a_full_model(tiny_project, capsys):
    code, run, _ = run_spec(tiny_project, FAST + "outputs:\n  keep_checkpoints_after_success: true\n")
    assert code == 0 and run.latest_checkpoint() is not None  # kept, as the spec asks
    assert main(["export", str(run.path)]) != 0
    assert "already a plain transformers model" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["", "  lora: {r: 4, loraplus_lr_ratio: 16}\n"])
def test_a_lora_export_answers_like_the_run(tiny_project, extra, tmp_path):
    from runner.execute.loading import load_result
    from transformers import AutoModelForCausalLM

    code, run, manifest = run_spec(tiny_project, FAST + "trainable:\n  mode: lora\n" + extra)
    assert code == 0
    assert main(["export", str(run.path), "--out", str(tmp_path / "out")]) == 0
    trained, _ = load_result(run, manifest.plan)
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert (logits(merged, ids) - logits(trained, ids)).abs().max().item() < SAME_LOGITS
