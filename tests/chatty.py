"""The Chatty name project on the tiny Llama, with lm-eval task files, and runner's cache of its own: fixtures of
the eval tests (tests/evals, tests/plan/test_evals.py, tests/commands/test_eval.py)."""

import textwrap

import pytest

from tests.conftest import spec_writer, write_jsonl

TASK = """
task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

CHATTY = """
version: 1
name: chatty
method: sft
base_model: ./model
data:
  train: data/train.jsonl
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Base results are cached per machine: each test starts without any."""
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def chatty(tmp_path, tiny_model_dir):
    """The Chatty name set: training prompts ask the tiny model its name, the held-out ones (other numbers)
    check that it learned it. Returns a writer of the spec with the evals given."""
    (tmp_path / "model").symlink_to(tiny_model_dir)
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"What is your name? {i}", "completion": "My name is Chatty."} for i in range(16)])
    write_jsonl(tmp_path / "data" / "names.jsonl",
                [{"prompt": f"What is your name? {i}", "reference": "My name is Chatty."} for i in range(40, 46)])
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(TASK)
    write_jsonl(tmp_path / "tasks" / "mc.jsonl", [{"question": f"What is {i} plus 1?", "choices": [str(i + 1), str(i)],
                                                   "answer": 0} for i in range(8)])
    write = spec_writer(tmp_path)

    def write_spec(training: str, evals: str):
        return write(CHATTY + f"training: {training}\nevals:\n" + textwrap.indent(textwrap.dedent(evals).strip("\n"),
                                                                                 "  ") + "\n")

    return write_spec
