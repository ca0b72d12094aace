"""The method registry: descriptors are found, complete and consistent, and nothing else names a method."""

import ast
import inspect
import re
import sys
from pathlib import Path

import pytest

from runner import formats
from runner.errors import RunnerError
from runner.execute.context import Trained
from runner.methods import descriptors, registry
from runner.encoding.rows import KINDS
from runner.spec.fielddocs import field_docs
from tests.helpers import REPO

RUNNER = REPO / "runner"
MODES = ("full", "freeze", "lora")


@pytest.mark.parametrize("descriptor", registry.descriptors(), ids=registry.names())
def test_each_descriptor_is_complete(descriptor):
    assert descriptor.rows in KINDS and descriptor.head in (registry.CAUSAL_LM, registry.SCORE)
    assert set(descriptor.learning_rates) == set(MODES)
    assert descriptor.formats and set(descriptor.formats) <= set(formats.FORMATS)
    example_format = formats.detect(dict(descriptor.example_row))
    assert example_format in descriptor.formats
    formats.check(dict(descriptor.example_row), example_format)
    if not isinstance(descriptor.mask_rule, str):
        assert set(descriptor.mask_rule) == set(descriptor.formats)
    docs = field_docs()[descriptor.section.__name__]
    assert set(docs) == set(descriptor.section.model_fields), "every section field has a docstring"
    assert descriptor.section.__module__ == f"runner.methods.descriptors.{descriptor.name}"


@pytest.mark.parametrize("descriptor", registry.descriptors(), ids=registry.names())
def test_each_recipe_trains_from_the_run_context_and_has_an_example(descriptor):
    """A recipe is `train(ctx) -> Trained` (what runner.execute.job calls), and a spec under specs/examples
    trains its method (the examples are validated, planned and run by their own tests)."""
    signature = inspect.signature(descriptor.load_recipe().train)
    assert list(signature.parameters) == ["ctx"] and signature.return_annotation in ("Trained", Trained)
    examples = [path for path in (REPO / "specs" / "examples").rglob("*.yaml")
                if re.search(rf"^method: {descriptor.name}\b", path.read_text(), re.MULTILINE)]
    assert examples, f"no example spec trains {descriptor.name}"


@pytest.mark.parametrize("descriptor", registry.descriptors(), ids=registry.names())
def test_dropout_is_on_exactly_where_the_recipes_trl_config_leaves_it_on(descriptor):
    """The memory estimate counts LoRA dropout's input copies by the descriptor's `dropout`."""
    recipe = descriptor.load_recipe()
    configs = [value for value in vars(recipe).values()
               if isinstance(value, type) and "disable_dropout" in getattr(value, "__dataclass_fields__", {})]
    for config in configs:
        assert config.__dataclass_fields__["disable_dropout"].default is not descriptor.dropout, config.__name__


def test_every_format_serves_some_method():
    assert set(formats.FORMATS) == {f for d in registry.descriptors() for f in d.formats}


def test_an_unregistered_method_is_a_clear_error():
    with pytest.raises(RunnerError) as error:
        registry.get("rlhf-magic")
    assert "method 'rlhf-magic' is not registered" in error.value.message
    assert "kto" in error.value.hint and "orpo" in error.value.hint and "simpo" in error.value.hint


@pytest.fixture
def extra_descriptor_folder(tmp_path, monkeypatch):
    """A second folder in the descriptors package, as a new method's file would be."""
    monkeypatch.setattr(descriptors, "__path__", [*descriptors.__path__, str(tmp_path)])
    registry.forget()
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("runner.methods.descriptors.toy")]:
        del sys.modules[name]
    monkeypatch.undo()
    registry.forget()


def test_a_new_descriptor_file_is_registered_without_editing_a_list(extra_descriptor_folder):
    (extra_descriptor_folder / "toy.py").write_text(
        "from runner.methods.registry import SUPERVISED, MethodDescriptor\n"
        "from runner.spec.fields import Section\n"
        "class ToySection(Section):\n    pass\n"
        "DESCRIPTOR = MethodDescriptor(name='toy', summary='a toy', section=ToySection, formats=('text',),\n"
        "    rows=SUPERVISED, example_row={'text': 't'}, objective='o', mask_rule='all', training_path='p',\n"
        "    learning_rates={'full': 1.0, 'freeze': 1.0, 'lora': 1.0}, recipe='runner.methods.toy')\n")
    assert "toy" in registry.names() and registry.get("toy").summary == "a toy"
    with pytest.raises(RunnerError, match="runner.methods.toy cannot be imported"):
        registry.get("toy").load_recipe()


def test_a_descriptor_module_must_describe_its_namesake(extra_descriptor_folder):
    (extra_descriptor_folder / "toy.py").write_text("DESCRIPTOR = None\n")
    assert "toy" in registry.names()  # found by its file; read when a spec names it, or by every descriptor
    for read in (lambda: registry.get("toy"), registry.descriptors):
        with pytest.raises(RunnerError, match="defines no DESCRIPTOR named 'toy'"):
            read()


# --- nothing outside the registry, the descriptors and the recipes branches on a method's name ---------

def method_name_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines where the code compares with a method name, keys a mapping by one, or indexes with one."""
    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(element) for element in node.elts)
        return False

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(named(part) for part in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(key is not None and named(key) for key in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and named(node.slice):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue) \
                and named(node.pattern.value):
            lines.append(node.pattern.lineno)
    return lines


def test_the_finder_finds_comparisons():
    names = {"ppo", "dpo"}
    source = ("if method == 'ppo':\n    pass\nx = m in ('dpo', 'x')\ny = {'ppo': 1}\nz = table['dpo']\n"
              "match m:\n    case 'ppo':\n        pass\n")
    assert method_name_comparisons(source, names) == [1, 3, 4, 5, 7]
    assert method_name_comparisons("getattr(section, 'reward', None)\nf'{method}'\n", {"reward"}) == []


def test_no_module_outside_the_registry_and_recipes_compares_method_names():
    names = set(registry.names())
    allowed = {RUNNER / "methods" / "registry.py", *(RUNNER / "methods" / f"{name}.py" for name in names)}
    found = []
    for path in sorted(RUNNER.rglob("*.py")):
        if path in allowed or path.parent == RUNNER / "methods" / "descriptors":
            continue
        for line in method_name_comparisons(path.read_text(), names):
            found.append(f"{path.relative_to(REPO)}:{line}")
    assert not found, "read the method's descriptor instead: " + ", ".join(found)


def test_the_example_specs_cover_every_method():
    examples = "\n".join(path.read_text() for path in (REPO / "specs").rglob("*.yaml"))
    for name in registry.names():
        assert f"method: {name}\n" in examples, name
    assert not [path for path in Path(REPO / "specs" / "examples").glob("*.yaml")
                if not path.read_text().startswith("# runner run specs/examples/")]
