import json

import numpy as np
import pytest

from runner.spec import modelinfo
from tests.helpers import llama_shapes, write_safetensors_header


def test_names_and_shapes_from_safetensors_headers(model_dir):
    facts = modelinfo.local_directory(model_dir)
    assert facts.num_layers == 4
    assert facts.shapes["model.layers.0.mlp.down_proj.weight"] == (8, 16)
    assert facts.tied == {"lm_head.weight": "model.embed_tokens.weight"}


def test_sharded_weights_are_merged(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "tie_word_embeddings": False}))
    shapes = list(llama_shapes(tied=False).items())
    write_safetensors_header(tmp_path / "model-00001-of-00002.safetensors", dict(shapes[:10]))
    write_safetensors_header(tmp_path / "model-00002-of-00002.safetensors", dict(shapes[10:]))
    facts = modelinfo.local_directory(tmp_path)
    assert len(facts.shapes) == len(shapes) and facts.tied == {}


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "has no config.json"),
    (lambda d: (d / "config.json").write_text("{"), "is not valid JSON"),
    (lambda d: (d / "config.json").write_text("{}"), "has no weights"),
    (lambda d: ((d / "config.json").write_text("{}"), (d / "model.safetensors").write_bytes(b"\xff" * 16)),
     "header"),
])
def test_broken_model_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(modelinfo.ModelFileError, match=message):
        modelinfo.local_directory(tmp_path)


def test_gguf_header_maps_llama_names(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.zeros((32, 8), dtype=np.float32))
    for block in range(2):
        writer.add_tensor(f"blk.{block}.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
        writer.add_tensor(f"blk.{block}.ffn_down.weight", np.zeros((8, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    facts = modelinfo.gguf_file(path)
    assert facts.num_layers == 2
    assert facts.shapes["model.layers.1.mlp.down_proj.weight"] == (8, 16)
    assert facts.shapes["model.embed_tokens.weight"] == (32, 8)
    assert facts.tied == {"lm_head.weight": "model.embed_tokens.weight"}


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 32)
    with pytest.raises(modelinfo.ModelFileError, match="not a GGUF file"):
        modelinfo.gguf_file(path)
