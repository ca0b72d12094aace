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
    ({"prompt": "p", "completion": "c", "label": False}, "unpaired"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
      "label": True}, "unpaired"),
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
    ({"prompt": "p", "completion": "c", "label": None}, '"label" must be true .* or false, not null'),
    ({"prompt": "p", "completion": "", "label": True}, '"completion" is empty'),
    ({"prompt": "p", "completion": "c", "lable": True}, 'unexpected key "lable": did you mean "label"'),
])
def test_reject_with_a_reason(row, message):
    with pytest.raises(RowError, match=message):
        formats.check(row, formats.detect(row))


def test_variants():
    assert formats.variant({"prompt": [{"role": "user", "content": "q"}], "completion": []}) == "conversational"
    assert formats.variant({"input": {}, "preferred_output": []}) == "openai"
    assert formats.variant({"prompt": "p", "completion": "c"}) == "standard"


@pytest.mark.parametrize("row, expected, message", [
    ({"prompt": "p", "answer": "c"}, "prompt_completion",
     'missing "completion" (prompt_completion rows have "prompt" and "completion"); unexpected "answer"'),
    ({"prompt": "p", "complete": "c"}, "prompt_completion",
     'unexpected "complete": did you mean "completion"?'),
    ({"prompt": "p", "completion": "c", "label": True}, "prompt_completion",
     'row is unpaired (it has "label"), but the file is prompt_completion'),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "unpaired",
     'row is preference (it has "chosen" and "rejected"), but the file is unpaired; missing "completion" and "label"'),
])
def test_a_row_of_another_shape_names_its_keys(row, expected, message):
    with pytest.raises(RowError) as error:
        formats.detect_as(row, expected)
    assert message in str(error.value)


def test_a_row_of_the_expected_shape_passes():
    formats.detect_as({"prompt": "p", "completion": "c", "id": 7}, "prompt_completion")
