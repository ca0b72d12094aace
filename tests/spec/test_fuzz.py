"""Property-based fuzzing of the spec reader: whatever the bytes, `load_yaml` and `check_spec` return
a document or diagnostics, never an exception (issue 10)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.spec.check import check_spec
from runner.spec.yamlpos import load_yaml
from tests.conftest import REPO

EXAMPLE = (REPO / "specs" / "examples" / "chatty-sft.yaml").read_text()
FRAGMENTS = ["version: 1\n", "name: x\n", "method: sft\n", "training:\n", "  epochs: ", "[", "]", "{", "}", ", ",
             "&a ", "*a", "&b ", "*b", "- ", ": ", "\n", "  ", "    ", "!!python/object ", "!!binary ", "!x ", "'",
             '"', "\\0", "\\ud800", "0x", "ff", "1e309", ".inf", ".nan", "-", "<<: ", "? ", "# c", "---\n", "...\n",
             "\t", "\x00", "\ufeff", "layers: ", "'0-99999999999'", "base_model: ", "{job: x}", "|\n", ">\n", "%YAML"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def assert_total(path: Path) -> None:
    document, diagnostics = load_yaml(path)
    if document is None:
        assert diagnostics and all(d.is_error for d in diagnostics)
    result = check_spec(path)
    assert (result.spec is None) == bool(result.errors)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    assert_total(path)


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))
def test_yaml_shaped_text(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_total(path)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.sampled_from(FRAGMENTS)), max_size=6))
def test_mutated_example(tmp_path, edits):
    text = EXAMPLE
    for position, fragment in edits:
        text = text[:position] + fragment + text[position:]
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_total(path)


README_FRAGMENTS = ["configs:\n", "- config_name: ", "default", "  data_files:\n", "  - split: train\n", "    path: ",
                    "'*.jsonl'", "'**/*'", "'[a-'", "'*a*a*a*a*b'", "  default: true\n", "&a ", "*a", "[", "]", "{",
                    "}", ", ", "\n", "  ", "- ", ": ", "!!python/object ", "<<: ", "\\ud800", "'", '"', "\x00", "x"]


@FUZZ
@given(st.lists(st.sampled_from(README_FRAGMENTS), max_size=40))
def test_any_dataset_readme_front_matter(tmp_path, fragments):
    """A dataset folder's README.md is anyone's file: its front matter and globs end in rows or a
    DataFileError, never another exception (issue 20)."""
    from runner.data.files import DataFileError
    from runner.data.sources import resolve
    from runner.spec.models import DataSource

    folder = tmp_path / "rows"
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text('{"text": "a"}\n')
    (folder / "README.md").write_text("---\n" + "".join(fragments) + "\n---\n", errors="surrogatepass")
    try:
        resolve(DataSource.model_validate("rows"), tmp_path, "train")
    except DataFileError:
        pass
