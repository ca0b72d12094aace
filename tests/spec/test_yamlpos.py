from pathlib import Path

import pytest

from runner.spec import yamlpos
from runner.spec.yamlpos import load_yaml


def load(tmp_path: Path, text: str | bytes):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_yaml(path, "spec.yaml")


def only_error(diagnostics):
    assert len(diagnostics) == 1, diagnostics
    assert diagnostics[0].severity == "error"
    return diagnostics[0]


def test_positions_of_values_and_keys(tmp_path):
    document, diagnostics = load(tmp_path, "a: 1\nb:\n  c: [x, y]\n")
    assert diagnostics == []
    assert document.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert (document.value_spans[("b", "c", 1)].line, document.value_spans[("b", "c", 1)].column) == (3, 10)
    assert document.key_spans[("b", "c")].column == 3
    # a path that is not in the file falls back to its nearest ancestor
    assert document.locate(("b", "missing")) == document.value_spans[("b",)]


def test_duplicate_keys_are_errors_with_both_lines(tmp_path):
    document, diagnostics = load(tmp_path, "name: a\nother: 1\nname: b\n")
    error = only_error(diagnostics)
    assert error.summary == "duplicate key 'name'"
    assert (error.span.line, error.span.column) == (3, 1)
    assert "line 1" in error.detail
    assert document.data["name"] == "a"


@pytest.mark.parametrize("text", [
    "a: !!python/object:os.system {}\n",
    "a: !!python/name:os.system\n",
    "a: !custom 3\n",
    "a: !!binary aGVsbG8=\n",
    "a: !!set {x}\n",
])
def test_tags_never_construct_objects(tmp_path, text):
    document, diagnostics = load(tmp_path, text)
    assert document is None
    assert "is not allowed" in only_error(diagnostics).summary


def test_billion_laughs_fails_fast(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 9)}]")
    document, diagnostics = load(tmp_path, "\n".join(lines) + "\n")
    assert document is None
    assert "aliases expand to more than" in only_error(diagnostics).summary


def test_small_aliases_are_fine(tmp_path):
    document, diagnostics = load(tmp_path, "a: &x [1, 2]\nb: *x\n")
    assert diagnostics == [] and document.data == {"a": [1, 2], "b": [1, 2]}


def test_merge_keys_are_refused(tmp_path):
    _, diagnostics = load(tmp_path, "base: &b {x: 1}\nother:\n  <<: *b\n")
    error = only_error(diagnostics)
    assert "merge keys" in error.summary and error.span.line == 3


def test_not_utf8_names_the_line(tmp_path):
    _, diagnostics = load(tmp_path, b"a: 1\nb: caf\xe9\n")
    error = only_error(diagnostics)
    assert "not valid UTF-8" in error.summary and error.span.line == 2 and error.span.column == 7


@pytest.mark.parametrize("text", ["", "   \n# only a comment\n"])
def test_empty_files(tmp_path, text):
    _, diagnostics = load(tmp_path, text)
    assert only_error(diagnostics).summary == "file is empty"


def test_huge_files_are_refused_before_parsing(tmp_path):
    _, diagnostics = load(tmp_path, "a: " + "x" * (yamlpos.MAX_FILE_BYTES + 1))
    assert "at most" in only_error(diagnostics).summary


def test_syntax_error_has_line_and_column(tmp_path):
    _, diagnostics = load(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    error = only_error(diagnostics)
    assert error.summary.startswith("YAML syntax error") and error.span.line >= 2


def test_several_documents_and_non_mappings(tmp_path):
    assert "several YAML documents" in only_error(load(tmp_path, "a: 1\n---\nb: 2\n")[1]).summary
    assert "must be a mapping" in only_error(load(tmp_path, "- a\n- b\n")[1]).summary


def test_scalars_follow_yaml_1_2_where_it_is_safer(tmp_path):
    document, _ = load(tmp_path, "lr: 2e-4\nlr2: 2.0e-4\nflag: yes\nreal: true\nhex: 0x10\nq: '5'\nn: null\n")
    assert document.data == {"lr": 2e-4, "lr2": 2e-4, "flag": "yes", "real": True, "hex": 16, "q": "5", "n": None}


def test_missing_file_is_a_diagnostic_not_a_traceback(tmp_path):
    _, diagnostics = load_yaml(tmp_path / "absent.yaml")
    assert "cannot read" in only_error(diagnostics).summary
