"""A declared reward in a spec: validated with the rest of it, each mistake at its file, line and column, and
torch-free."""

import pytest

from runner.install import pip_install
from runner.rewards import pattern
from runner.spec.check import check_spec
from tests.helpers import BASE_SPEC, assert_imports_none_of, write_jsonl

GRPO = BASE_SPEC.replace("method: sft", "method: grpo")


@pytest.fixture
def prompts(project, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": f"What is {i} + 1?", "answer": i + 1} for i in range(4)])
    return project


def errors(path):
    return [(d.path, d.span.line if d.span else None, d.span.column if d.span else None, d.summary)
            for d in check_spec(path).errors]


def test_a_reward_of_checks_is_valid_and_runs_no_code(prompts):
    result = check_spec(prompts(GRPO + "grpo:\n  reward:\n    - numeric: {column: answer, after: 'Answer:'}\n"
                                       "    - regex: {pattern: '^Answer: [0-9]+$'}\n      weight: 0.5\n"))
    assert result.errors == [] and result.runs_code == []
    assert result.spec.grpo.reward.formula() == "numeric + 0.5 x regex"


def test_mistakes_are_reported_where_they_are_written(prompts):
    path = prompts(GRPO + "grpo:\n  reward:\n"
                          "    - numeric: {column: answer}\n      regex: {pattern: x}\n"  # two kinds in one term
                          "    - regex: {pattern: '(a)\\1'}\n"  # a backreference
                          "    - json: {schema: {type: object, $ref: '#/x'}}\n"
                          "    - length: {min: 9, max: 3}\n"
                          "    - exact: {column: answer}\n      weight: 0\n")
    assert errors(path) == [
        ("grpo.reward[0]", 9, 7, "give exactly one of exact, numeric, regex, contains, json, format, length, model, "
                                 "function in a reward term (found: numeric, regex)"),
        ("grpo.reward[1].regex.pattern", 11, 24, "RE2 does not accept this pattern: invalid escape sequence: \\1"),
        ("grpo.reward[2].json.schema", 12, 22, "schema.$ref: runner does not check the keyword '$ref' (it checks: "
                                              "additionalProperties, allOf, anyOf, const, enum, exclusiveMaximum, "
                                              "exclusiveMinimum, items, maxItems, maxLength, maximum, minItems, "
                                              "minLength, minimum, not, oneOf, pattern, properties, required, type)"),
        ("grpo.reward[3].length", 13, 15, "min 9 is above max 3"),
        ("grpo.reward[4].weight", 15, 15, "a weight of 0 makes the term do nothing; remove the term"),
    ]


def test_one_term_without_a_list_is_placed_as_written(prompts):
    path = prompts(GRPO + "grpo:\n  reward: {regex: {pattern: '(?=a)'}}\n")
    assert errors(path) == [("grpo.reward.regex.pattern", 8, 29, "RE2 does not accept this pattern: invalid perl "
                                                                 "operator: (?=")]


def test_names_must_differ_and_one_reward_model_at_most(prompts):
    path = prompts(GRPO + "grpo:\n  reward:\n    - {contains: {text: a}, name: x}\n    - {contains: {text: b}, name: x}\n")
    assert [e[3] for e in errors(path)] == ["term names must differ: x"]
    path = prompts(GRPO + "grpo:\n  reward:\n    - model: ./rm\n    - model: ./rm2\n")
    assert "a reward holds at most one reward model" in [e[3] for e in errors(path)]


def test_every_row_must_hold_the_columns_the_checks_read(prompts, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "a", "answer": 1}, {"prompt": "b"},
                                                    {"prompt": "c", "answer": "many"}])
    path = prompts(GRPO + "grpo:\n  reward:\n    - contains: {text: x}\n    - numeric: {column: answer}\n")
    ((where, line, column, summary),) = errors(path)
    assert (where, line, column) == ("grpo.reward[1].numeric.column", 10, 25)
    assert summary.startswith("data.train ") and summary.endswith(
        "data/train.jsonl line 2 has no 'answer' (the numeric check reads it)")
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": "a", "answer": 1}, {"prompt": "c", "answer": "many"}])
    assert errors(path)[0][3].endswith("data/train.jsonl line 2 'answer' holds no number (the numeric check "
                                       "compares with it): 'many'")


def test_a_column_mapping_keeps_the_columns_a_check_reads(prompts, tmp_path):
    write_jsonl(tmp_path / "data" / "qa.jsonl", [{"question": "What is 1 + 1?", "solution": "... #### 2"}])
    spec = GRPO.replace("train: data/train.jsonl", "train: {path: data/qa.jsonl, columns: {prompt: question, "
                                                   "solution: solution}}")
    assert errors(prompts(spec + "grpo:\n  reward: {numeric: {column: solution}}\n")) == []
    typo = spec.replace("solution: solution", "promt: solution")
    assert "'promt' is not a row key; did you mean 'prompt'?" in errors(prompts(typo + "grpo:\n  reward: "
                                                                                       "{contains: {text: a}}\n"))[0][3]


def test_a_function_term_runs_code_and_says_so(prompts, tmp_path):
    (tmp_path / "scoring.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    result = check_spec(prompts(GRPO + "grpo:\n  reward:\n    - contains: {text: a}\n    - function: scoring:score\n"))
    assert result.errors == []
    assert [use.to_json() for use in result.runs_code] == [
        {"kind": "reward_function", "path": "grpo.reward[1].function", "what": "scoring:score", "line": 10}]


def test_without_re2_the_patterns_are_a_warning_not_a_guess(prompts, monkeypatch):
    def missing():
        raise pattern.EngineMissing("not here")

    monkeypatch.setattr(pattern, "_re2", missing)
    pattern.compile_pattern.cache_clear()
    try:
        result = check_spec(prompts(GRPO + "grpo:\n  reward: {regex: {pattern: '(?=refused by RE2)'}}\n"))
    finally:
        pattern.compile_pattern.cache_clear()
    assert result.errors == []
    (warning,) = result.warnings
    assert warning.path == "grpo.reward.regex" and "google-re2 is not installed here" in warning.summary
    assert warning.hint == f"where jobs run: {pip_install('rewards')}" and "[rewards]" in warning.hint


def test_declared_rewards_stay_torch_free():
    assert_imports_none_of(
        "import runner.rewards.scoring, runner.spec.check, runner.methods.registry\n"
        "runner.methods.registry.descriptors()\n"
        "from runner.rewards.scoring import Completion, RewardScorer\n"
        "from runner.rewards.spec import DeclaredReward\n"
        "RewardScorer(DeclaredReward.model_validate([{'regex': {'pattern': 'a'}}])).scores([Completion('a')], [{}])")
