"""Model folders with a real model's shape and no weights, for planning (what-if) only.

    python -m tests.shapes llama-8b DIR

writes DIR/config.json, a small tokenizer and a model.safetensors whose header declares
every tensor of the model (names, shapes, dtypes) with no data behind it: `runner validate`
and `runner plan` read only headers and build the model on the meta device, so they work;
loading the weights (`runner run`) fails.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

SHAPES = {
    # Llama 3.1 8B's config.json, as published
    "llama-8b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096,
                     intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                     vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                     tie_word_embeddings=False, torch_dtype="bfloat16", bos_token_id=2, eos_token_id=3,
                     pad_token_id=1),
}


def make_shape_only(folder: Path, config: dict) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny import make_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    header, offset = {}, 0
    for name, tensor in model.state_dict().items():
        size = tensor.numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    make_tokenizer(folder)
    return folder


if __name__ == "__main__":
    name, target = sys.argv[1], Path(sys.argv[2])
    make_shape_only(target, SHAPES[name])
    print(f"{target}: {name}-shaped model, no weights (for runner plan only)")
