import pytest

from runner import formats
from runner.formats import RowError


@pytest.mark.parametrize("row, expected", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"text": "t"}, "text"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"chosen": "a", "rejected": "b"}, "preference"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "preference"),
    ({"prompt": "p"}, "prompt_only"),
])
def test_detect_and_accept(row, expected):
    assert formats.detect(row) == expected
    formats.check(row, expected)


@pytest.mark.parametrize("row, message", [
    ([1, 2], "must be a JSON object"),
    ({"foo": 1}, "no known row shape"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
     "no assistant message"),
    ({"messages": [{"role": "robot", "content": "q"}]}, "role is 'robot'"),
    ({"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
     "only assistant messages"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
     "must be 0 or 1"),
    ({"prompt": "p", "completion": ""}, '"completion" is empty'),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "identical"),
    ({"input": {}, "preferred_output": [], "non_preferred_output": []}, '"input" must be an object'),
])
def test_reject_with_a_reason(row, message):
    with pytest.raises(RowError, match=message):
        formats.check(row, formats.detect(row))


def test_variants():
    assert formats.variant({"prompt": [{"role": "user", "content": "q"}], "completion": []}) == "conversational"
    assert formats.variant({"input": {}, "preferred_output": []}) == "openai"
    assert formats.variant({"prompt": "p", "completion": "c"}) == "standard"


def test_every_format_serves_some_method():
    assert set(formats.FORMATS) == {f for allowed in formats.FORMATS_FOR_METHOD.values() for f in allowed}
