"""Gates: parsed without torch, decided from the base's and the result's scores."""

import pytest

from runner.evals.gates import GateError, parse_gate


@pytest.mark.parametrize("text, eval_name, metric, op, number, offset", [
    ("chatty-name.exact_match >= 0.9", "chatty-name", "exact_match", ">=", 0.9, None),
    ("hellaswag.acc_norm >= base - 0.02", "hellaswag", "acc_norm", ">=", None, -0.02),
    ("gsm8k.exact_match,strict-match>base", "gsm8k", "exact_match,strict-match", ">", None, 0.0),
    ("s.length < 1e2", "s", "length", "<", 100.0, None),
    ("s.loglikelihood <= base + .5", "s", "loglikelihood", "<=", None, 0.5),
])
def test_conditions_parse(text, eval_name, metric, op, number, offset):
    gate = parse_gate(text)
    assert (gate.eval, gate.metric, gate.op, gate.number, gate.offset) == (eval_name, metric, op, number, offset)


@pytest.mark.parametrize("text, says", [
    ("exact_match >= 0.9", "NAME.METRIC OP VALUE"),
    ("s.exact_match => 0.9", "NAME.METRIC OP VALUE"),
    ("s.exact_match >= high", "not a number, base"),
    ("s.exact_match >= base * 2", "not a number, base"),
    ("s.exact_match >= 1e999", "not a finite number"),
])
def test_bad_conditions_say_how_to_write_one(text, says):
    with pytest.raises(GateError, match=says.replace("*", r"\*")):
        parse_gate(text)


def test_a_gate_is_decided_against_a_number_or_the_base():
    assert parse_gate("s.acc >= 0.9").decide(0.95, None) == (True, 0.9, None)
    assert parse_gate("s.acc >= base - 0.02").decide(0.49, 0.5)[0] is True
    assert parse_gate("s.acc >= base - 0.02").decide(0.47, 0.5)[0] is False
    assert parse_gate("s.acc >= base").decide(0.9, None) == (False, None, "no base score of s.acc to compare with")
    assert parse_gate("s.acc >= 0").decide(None, 0.5) == (False, 0.0, "no s.acc score")
    assert parse_gate("s.acc >= 0").decide(float("nan"), 0.5)[0] is False
