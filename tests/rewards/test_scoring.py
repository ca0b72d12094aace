"""Each declared check on hand-written completions: right, wrong, malformed and adversarial ones, each scored
within a time and memory bound (a completion is whatever a model writes)."""

import time
import tracemalloc

import pytest

from runner.rewards import jsonvalue, text
from runner.rewards.scoring import Completion, RewardScorer, score_check
from runner.rewards.spec import DeclaredReward

ROW = {"answer": "42", "city": "Paris", "number": 3.5}
HUGE = 60_000  # characters: text.MAX_TEXT is 65,536


def check(declared: dict):
    """The check of a one-term reward, as a spec would declare it."""
    return DeclaredReward.model_validate([declared]).terms[0].check


def score(declared: dict, completion: str | bytes, row=ROW, tokens=None) -> float:
    return score_check(check(declared), Completion(completion, tokens), row)


def bounded(declared: dict, completion, row=ROW, tokens=None, seconds=1.0, megabytes=32) -> float:
    """The score, asserting that it took under `seconds` and `megabytes` of Python memory: a backtracking
    engine, an unbounded parser or a digit-by-digit conversion would take minutes or gigabytes here."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = score(declared, completion, row, tokens)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"{elapsed:.2f} s"
    assert peak < megabytes * 2**20, f"{peak / 2**20:.0f} MiB"
    return result


NUMERIC = {"numeric": {"column": "answer", "after": "Answer:"}}


@pytest.mark.parametrize("completion, expected", [
    ("6 x 7 ... Answer: 42", 1.0),
    ("Answer: 41", 0.0),  # wrong
    ("Answer: 4 then 42", 1.0),  # the last number of the answer line
    ("The answer is 42", 0.0),  # malformed: no marker
    ("Answer: forty-two", 0.0),
    ("Answer: 42.0", 1.0),
    ("Answer: 1,042", 0.0),
    ("Answer: \u221242", 0.0),  # a unicode minus is a minus: -42
    ("Answer: " + "9" * HUGE, 0.0),  # a huge number is no answer
    ("Answer: 42\nAnswer: 7", 0.0),  # the last answer counts
])
def test_numeric_reads_the_last_number_after_the_marker(completion, expected):
    assert bounded(NUMERIC, completion) == expected


def test_numeric_tolerance_and_answers_written_as_solutions():
    assert score({"numeric": {"column": "number", "tolerance": 0.1}}, "about 3.45") == 1.0
    assert score({"numeric": {"column": "number", "tolerance": 0.01}}, "about 3.45") == 0.0
    gsm8k = {"answer": "She sells 16 - 3 - 4 = 9 eggs.\n#### 18"}
    assert score({"numeric": {"column": "answer"}}, "so 18", gsm8k) == 1.0
    assert score({"numeric": {"column": "answer"}}, "so 18", {"answer": True}) == 0.0  # not a number
    assert score({"numeric": {"column": "answer"}}, "so 18", {}) == 0.0  # a row without the column


def test_numeric_from_a_tagged_answer():
    tagged = {"numeric": {"column": "answer", "tag": "answer"}}
    assert score(tagged, "<think>6*7 = 42, not 40</think><answer>42</answer>") == 1.0
    assert score(tagged, "<think>42</think><answer>40</answer>") == 0.0
    assert score(tagged, "<answer>42") == 0.0  # unclosed
    assert bounded(tagged, "<answer>" * 5_000 + "42</answer>") == 1.0


@pytest.mark.parametrize("completion, expected", [
    ("Paris", 1.0), ("  paris ", 1.0), ("PARIS", 1.0), ("Lyon", 0.0), ("Paris, France", 0.0), ("", 0.0),
])
def test_exact_match_normalises_both_sides(completion, expected):
    assert score({"exact": {"column": "city"}}, completion) == expected


def test_exact_match_steps_are_the_spec_s():
    as_written = {"exact": {"column": "city", "normalize": []}}
    assert score(as_written, "Paris") == 1.0 and score(as_written, "paris") == 0.0
    punctuation = {"exact": {"column": "city", "normalize": ["strip_punctuation", "lower"]}}
    assert score(punctuation, "'Paris.'") == 1.0
    assert score({"exact": {"column": "answer", "after": "Answer:"}}, "Answer: 42") == 1.0
    assert score({"exact": {"column": "number"}}, "3.5") == 1.0  # a number column compares as JSON text


@pytest.mark.parametrize("completion, expected", [
    ("Answer: 12", 1.0), ("Answer: -3", 1.0), ("answer: 12", 0.0), ("Answer: 12 apples", 0.0), ("", 0.0),
])
def test_regex_full_match(completion, expected):
    assert score({"regex": {"pattern": "Answer: -?[0-9]+", "full": True}}, completion) == expected


def test_regex_search_and_case():
    assert score({"regex": {"pattern": "chatty"}}, "I am Chatty.") == 0.0
    assert score({"regex": {"pattern": "chatty", "case_sensitive": False}}, "I am Chatty.") == 1.0
    assert score({"regex": {"pattern": r"\bAnswer\b"}}, "The Answer is") == 1.0


def test_a_backtracking_pattern_runs_in_linear_time():
    """(a+)+$ takes exponential time in Python's re on 'aaa...b'; on RE2 it is one pass."""
    evil = {"regex": {"pattern": "(a+)+$"}}
    assert bounded(evil, "a" * HUGE + "b") == 0.0
    assert bounded({"regex": {"pattern": "(x+x+)+y"}}, "x" * HUGE) == 0.0
    assert bounded({"regex": {"pattern": "(.*a){20}"}}, "a" * 30 + "b" * HUGE) == 1.0


@pytest.mark.parametrize("pattern, reason", [
    ("(a)\\1", "invalid escape sequence"),  # backreference
    ("(?=a)b", "invalid perl operator"),  # lookahead
    ("((a{100}){100}){100}", "repetition"),  # a program of 10^6 states
    ("a" * 1001, "at most 1000"),
])
def test_patterns_re2_cannot_bound_are_refused_when_validated(pattern, reason):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=reason):
        DeclaredReward.model_validate([{"regex": {"pattern": pattern}}])


def test_contains_a_text_or_the_row_s_column():
    assert score({"contains": {"text": "Chatty"}}, "I am Chatty.") == 1.0
    assert score({"contains": {"text": "chatty"}}, "I am Chatty.") == 0.0
    assert score({"contains": {"text": "chatty", "case_sensitive": False}}, "I am Chatty.") == 1.0
    assert score({"contains": {"column": "city"}}, "It is Paris.") == 1.0
    assert score({"contains": {"column": "city"}}, "It is Paris.", {}) == 0.0


SCHEMA = {"type": "object", "required": ["answer"], "additionalProperties": False,
          "properties": {"answer": {"type": "integer", "minimum": 0}, "unit": {"type": "string", "pattern": "^[a-z]+$"}}}


@pytest.mark.parametrize("completion, expected", [
    ('{"answer": 42}', 1.0),
    ('  {"answer": 42, "unit": "cm"}\n', 1.0),
    ('```json\n{"answer": 42}\n```', 1.0),  # a Markdown fence, as models write JSON
    ('{"answer": -1}', 0.0),  # below the minimum
    ('{"answer": 4.5}', 0.0),  # not an integer
    ('{"answer": true}', 0.0),  # a boolean is not a number
    ('{"answer": 42, "extra": 1}', 0.0),  # no additional properties
    ('{"answer": 42, "unit": "CM"}', 0.0),  # pattern
    ('{"unit": "cm"}', 0.0),  # required
    ('{"answer": 42', 0.0),  # malformed
    ('{"answer": NaN}', 0.0),  # not JSON
    ("[42]", 0.0),
    ("", 0.0),
])
def test_json_conforms_to_the_schema(completion, expected):
    assert bounded({"json": {"schema": SCHEMA}}, completion) == expected


def test_adversarial_json_is_refused_in_bounded_time_and_memory():
    plain = {"json": {}}
    assert bounded(plain, "[" * HUGE + "]" * HUGE) == 0.0  # deep: refused before parsing
    assert bounded(plain, "[" * 32 + "]" * 32) == 1.0  # the deepest accepted
    assert bounded(plain, "[" * 33 + "]" * 33) == 0.0
    assert bounded(plain, "1" * HUGE) == 0.0  # 60,000 digits: more than Python converts
    assert bounded(plain, '"' + "\\\\" * (HUGE // 2) + '"') == 1.0  # a long string is fine
    assert bounded(plain, '{"a": [' + "1," * (HUGE // 2 - 10) + "1]}") == 1.0
    assert bounded({"json": {"schema": {"type": "array", "items": {"type": "string", "pattern": "(a+)+$"}}}},
                   '["' + "a" * 20_000 + 'b", "' + "a" * 20_000 + 'b"]') == 0.0


def test_json_in_a_tag():
    assert score({"json": {"tag": "answer", "schema": SCHEMA}}, 'Sure! <answer>{"answer": 3}</answer>') == 1.0
    assert score({"json": {"schema": SCHEMA}}, 'Sure! {"answer": 3}') == 0.0


@pytest.mark.parametrize("completion, expected", [
    ("<think>6 times 7</think><answer>42</answer>", 1.0),
    ("  <think>\n6 times 7\n</think>\n<answer> 42 </answer>\n", 1.0),
    ("<answer>42</answer><think>6 times 7</think>", 0.0),  # order
    ("<think>6 times 7</think>", 0.0),  # a part missing
    ("<think></think><answer>42</answer>", 0.0),  # an empty part
    ("Sure! <think>x</think><answer>42</answer>", 0.0),  # text outside the parts
    ("<think>x</think><answer>42</answer> Hope this helps", 0.0),
    ("<think><think>x</think><answer>42</answer>", 0.0),  # nested opening tag
    ("<think>" * 20_000, 0.0),
])
def test_format_is_the_tagged_parts_and_nothing_else(completion, expected):
    assert bounded({"format": {"tags": ["think", "answer"]}}, completion) == expected


def test_length_limits_and_penalties():
    limit = {"length": {"unit": "words", "max": 5}}
    assert score(limit, "one two three") == 1.0 and score(limit, "one two three four five six") == 0.0
    assert score({"length": {"unit": "tokens", "min": 3, "max": 8}}, "x", tokens=2) == 0.0
    assert score({"length": {"unit": "tokens", "min": 3, "max": 8}}, "x", tokens=8) == 1.0
    penalty = {"length": {"unit": "characters", "max": 10, "penalty": 0.5}}
    assert score(penalty, "short") == 0.0
    assert score(penalty, "x" * 14) == -2.0
    assert bounded(penalty, "x" * HUGE) == pytest.approx(-0.5 * (HUGE - 10))
    with pytest.raises(ValueError, match="token count"):
        score({"length": {"max": 3}}, "x")


@pytest.mark.parametrize("declared", [
    NUMERIC, {"exact": {"column": "city"}}, {"regex": {"pattern": "Paris"}}, {"contains": {"text": "Paris"}},
    {"json": {"schema": SCHEMA}}, {"format": {"tags": ["answer"]}}, {"length": {"unit": "characters", "max": 9}},
])
@pytest.mark.parametrize("completion", [
    b"Answer: 4\xff\xfe2 Paris",  # bytes that are not UTF-8
    "Answer: 4\udcff2 Paris",  # a lone surrogate, as surrogateescape decoding leaves
    None, "\x00" * 100, ["not", "text"],
])
def test_invalid_text_scores_without_raising(declared, completion):
    assert bounded(declared, completion) in (0.0, 1.0)


def test_the_scorer_weighs_and_sums_every_term():
    reward = DeclaredReward.model_validate([NUMERIC, {"regex": {"pattern": "^Answer: [0-9]+$"}, "weight": 0.5},
                                            {"length": {"unit": "words", "max": 2, "penalty": 0.1}, "name": "short"}])
    scorer = RewardScorer(reward)
    completions = [Completion("Answer: 42"), Completion("Answer: 7"), Completion("it is 42 I think")]
    scores = scorer.scores(completions, [ROW] * 3)
    assert scores == {"numeric": [1.0, 0.0, 0.0], "regex": [1.0, 1.0, 0.0], "short": [0.0, 0.0, pytest.approx(-0.3)]}
    assert scorer.total(scores) == pytest.approx([1.5, 0.5, -0.3])
    assert reward.formula() == "numeric + 0.5 x regex + short"


def test_the_text_helpers_are_linear_on_their_worst_inputs():
    for worst in ("1," * HUGE, "1" * HUGE + "e", "." * HUGE, "-" * HUGE + "1"):
        started = time.perf_counter()
        text.last_number(text.clean(worst))
        assert time.perf_counter() - started < 1.0
    assert text.last_number("costs 1,234.50 or -3e2") == -300.0
    assert text.number("9" * 101) is None
    assert jsonvalue.parse('{"a": 1e999}') == (True, {"a": float("inf")})  # valid JSON; a schema may bound it
