"""Scoring a row by each metric, the regex time bound, and the JSON Schema subset."""

import time

import pytest

from runner.evals import schema
from runner.evals.metrics import Scorer, last_number
from runner.evals.regex import BoundedRegex, MatchTimedOut
from runner.spec.evals import EvalSet


def scorer(tmp_path, *metrics):
    item = EvalSet.model_validate({"name": "s", "data": "x.jsonl", "metrics": list(metrics)})
    return Scorer(item.metrics, tmp_path)


def score(tmp_path, metric, answer, reference=None, **kwargs):
    with_scorer = scorer(tmp_path, metric)
    try:
        scores, notes = with_scorer.score(answer, reference, tokens=kwargs.get("tokens", 0),
                                          loglikelihood=kwargs.get("loglikelihood"))
    finally:
        with_scorer.close()
    return next(iter(scores.values())), notes


@pytest.mark.parametrize("metric, answer, reference, expected", [
    ("exact_match", "  My name is Chatty. ", "My name is Chatty.", 1.0),
    ("exact_match", "my name is chatty", "My name is Chatty.", 0.0),
    ({"exact_match": {"ignore_case": True, "ignore_punctuation": True}}, "my name is  chatty", "My name is Chatty.", 1.0),
    ("exact_match", "Paris", ["Lyon", "Paris"], 1.0),
    ("exact_match", "42", 42, 1.0),
    ("contains", "Hello! I am Chatty, your assistant.", "Chatty", 1.0),
    ("contains", "I am an assistant.", "Chatty", 0.0),
    ({"numeric": {"tolerance": 0.01}}, "So the total is 1,234.005 dollars", 1234, 1.0),
    ("numeric", "The answer is 41 or maybe 43", 42, 0.0),
    ({"numeric": {"relative": 0.1}}, "about 95", "100", 1.0),
    ("valid_json", ' {"name": "Chatty"} ', None, 1.0),
    ("valid_json", "name: Chatty", None, 0.0),
    ({"regex": "Chat+y"}, "I am Chatttty", None, 1.0),
    ({"regex": {"pattern": "chatty", "full": True, "ignore_case": True}}, "CHATTY", None, 1.0),
    ({"regex": {"pattern": "chatty", "full": True}}, "chatty!", None, 0.0),
    ("length", "four words in here", None, 18.0),
    ({"length": {"unit": "words"}}, "four words in here", None, 4.0),
])
def test_each_metric_scores_a_row(tmp_path, metric, answer, reference, expected):
    assert score(tmp_path, metric, answer, reference)[0] == expected


def test_length_in_tokens_and_loglikelihood_come_from_the_model(tmp_path):
    assert score(tmp_path, {"length": {"unit": "tokens"}}, "anything", tokens=7)[0] == 7.0
    assert score(tmp_path, "loglikelihood", "", "ref", loglikelihood=-1.5)[0] == -1.5


def test_a_json_schema_file_is_applied(tmp_path):
    (tmp_path / "answer.json").write_text('{"type": "object", "required": ["name"], "properties": '
                                          '{"name": {"type": "string", "minLength": 2}}, "additionalProperties": false}')
    assert score(tmp_path, {"json_schema": "answer.json"}, '{"name": "Chatty"}')[0] == 1.0
    assert score(tmp_path, {"json_schema": "answer.json"}, '{"name": "C"}')[0] == 0.0
    assert score(tmp_path, {"json_schema": "answer.json"}, '{"name": "Chatty", "age": 3}')[0] == 0.0
    assert score(tmp_path, {"json_schema": {"inline": {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2}}},
                 "[1, 2]")[0] == 1.0


@pytest.mark.parametrize("value, fragment, expected", [
    (3, {"type": "integer", "minimum": 1, "exclusiveMaximum": 3}, False),
    (2.0, {"type": "integer"}, True),
    (True, {"type": "integer"}, False),
    (True, {"enum": [1]}, False),
    ({"a": 1}, {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, True),
    ({"a": 1, "b": 2}, {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, False),
    ("x", {"not": {"type": "string"}}, False),
    ([1, "a"], {"items": {"anyOf": [{"type": "number"}, {"const": "a"}]}}, True),
])
def test_the_schema_subset_checks_values_as_json_schema_does(value, fragment, expected):
    assert schema.problems(fragment) == []
    assert schema.satisfies(value, fragment) is expected


def test_a_schema_keyword_runner_does_not_check_is_a_problem_not_a_silent_pass():
    found = schema.problems({"type": "object", "properties": {"name": {"type": "string", "pattern": "^C"}},
                             "$ref": "#/x", "minimum": "1"})
    assert any("properties.name.pattern" in problem and "'pattern'" in problem for problem in found)
    assert any(problem.startswith("$ref") for problem in found) and any("minimum: a number" in p for p in found)


def test_a_regex_that_backtracks_catastrophically_does_not_hang(tmp_path):
    with BoundedRegex(seconds=0.5) as regex:
        assert regex.matches("a+b", "xaab")  # the worker starts and answers
        started = time.monotonic()
        with pytest.raises(MatchTimedOut):
            regex.matches("(a+)+$", "a" * 40 + "b")
        assert time.monotonic() - started < 5
        assert regex.matches("Chatty", "I am Chatty") and not regex.matches("^x", "y")  # a fresh worker goes on


def test_a_row_whose_regex_runs_out_of_time_scores_0_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr("runner.evals.regex.MATCH_SECONDS", 0.3)
    value, notes = score(tmp_path, {"regex": "(a+)+$"}, "a" * 40 + "b")
    assert value == 0.0 and "regex: matching took longer than 0.3 s; scored 0" in notes[0]


def test_the_last_number_of_an_answer():
    assert last_number("first 3, then -2.5e1") == -25.0
    assert last_number("no number") is None
