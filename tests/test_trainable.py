import pytest

from runner import trainable
from runner.trainable import SelectionError, TrainablePolicy, parse_layers, select
from tests.helpers import llama_shapes

SHAPES = llama_shapes(layers=4, tied=False)


@pytest.mark.parametrize("value, expected", [
    ("all", (0, 1, 2, 3)), ("last:2", (2, 3)), ("first:1", (0,)), ("1-2", (1, 2)), (3, (3,)),
    ([0, "2-3"], (0, 2, 3)), ([3, 0, 3], (0, 3)),
])
def test_layer_forms(value, expected):
    assert parse_layers(value).indices(4) == expected


@pytest.mark.parametrize("value, message", [
    ("last:0", "selects no layer"), ("3-1", "runs backwards"), ("middle", "is not a layer selection"),
    ([], "empty"), (-1, "negative"), ([["1"]], "list items"), (["last:2"], "list items"), (True, "expected"),
])
def test_bad_layer_forms(value, message):
    with pytest.raises(SelectionError, match=message):
        parse_layers(value)


def test_layers_beyond_the_model():
    with pytest.raises(SelectionError, match="the model has 4"):
        parse_layers("last:5").indices(4)
    with pytest.raises(SelectionError, match="layer 7 does not exist"):
        parse_layers([1, 7]).indices(4)


@pytest.mark.parametrize("name, family", [
    ("model.layers.0.self_attn.q_proj.weight", "attention"),
    ("model.layers.0.post_attention_layernorm.weight", "norm"),
    ("model.layers.0.mlp.down_proj.weight", "mlp"),
    ("model.embed_tokens.weight", "embeddings"),
    ("lm_head.weight", "lm_head"),
    ("model.norm.weight", "norm"),
    ("transformer.h.3.attn.c_attn.weight", "attention"),
    ("transformer.h.3.ln_1.weight", "norm"),
    ("transformer.wte.weight", "embeddings"),
])
def test_families(name, family):
    assert trainable.family_of(name) == family


def test_full_trains_everything():
    selection = select(SHAPES, TrainablePolicy("full"))
    assert selection.trained == tuple(SHAPES) and selection.frozen == ()


def test_freeze_last_layers_with_extra_modules():
    selection = select(SHAPES, TrainablePolicy("freeze", parse_layers("last:1"), also=("lm_head", "norm")))
    layer3 = {name for name in SHAPES if ".layers.3." in name}
    norms = {name for name in SHAPES if trainable.family_of(name) == "norm"}
    assert set(selection.trained) == layer3 | {"lm_head.weight"} | norms
    assert "model.layers.2.mlp.up_proj.weight" in selection.frozen


def test_freeze_with_families_and_globs():
    policy = TrainablePolicy("freeze", parse_layers("1-2"), modules=("mlp", "*.o_proj.*"))
    trained = set(select(SHAPES, policy).trained)
    assert trained == {f"model.layers.{i}.{p}.weight" for i in (1, 2)
                       for p in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.o_proj")}


def test_lora_targets_linear_weights_in_the_selected_layers():
    selection = select(SHAPES, TrainablePolicy("lora", parse_layers("last:1"), modules=("attention",),
                                               also=("lm_head",)))
    assert selection.lora_targets == tuple(f"model.layers.3.self_attn.{p}_proj" for p in "qkvo")
    assert selection.trained == ("lm_head.weight",)


def test_lora_defaults_to_attention_and_mlp():
    selection = select(SHAPES, TrainablePolicy("lora"))
    assert len(selection.lora_targets) == 4 * 7 and not any("norm" in t for t in selection.lora_targets)


def test_patterns_that_match_nothing_are_reported():
    selection = select(SHAPES, TrainablePolicy("freeze", also=("*.nothing.*",), modules=("*.gate_proj.*",)))
    assert selection.unmatched == (("also", "*.nothing.*"),)


def test_tied_output_projection_selects_the_embedding():
    shapes = llama_shapes(tied=True)
    selection = select(shapes, TrainablePolicy("freeze", parse_layers("last:1"), also=("lm_head",)),
                       tied={"lm_head.weight": "model.embed_tokens.weight"})
    assert "model.embed_tokens.weight" in selection.trained
    assert selection.tied == (("lm_head.weight", "model.embed_tokens.weight"),)
    assert selection.unmatched == ()


def test_new_heads_are_always_trained():
    shapes = {**llama_shapes(), "score.weight": (1, 8)}
    selection = select(shapes, TrainablePolicy("freeze", parse_layers("last:1"), modules=("mlp",)),
                       new=("score.weight",))
    assert "score.weight" in selection.trained


def test_bare_words_must_be_families():
    trainable.check_module_pattern("attention")
    trainable.check_module_pattern("*.q_proj.*")
    with pytest.raises(SelectionError, match="did you mean 'mlp'"):
        trainable.check_module_pattern("mpl")
