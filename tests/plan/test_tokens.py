"""The row encoder: a chat template is the model's, anyone's, and is rendered within a time limit."""

from __future__ import annotations

import time

import pytest

from runner.errors import RunnerError
from runner.plan.tokens import TEMPLATE_SECONDS, RowEncoder
from tests.tiny import make_tokenizer

NESTED_LOOPS = ("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
                "{% endfor %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}")


def test_a_template_whose_loops_never_end_fails_the_encoding_not_the_row(tmp_path):
    """Each range is within Jinja's sandbox limit, their product is 10**15 steps (issue 20: `runner plan` spun,
    and the daemon's only planning worker was held for its 30-minute deadline)."""
    tokenizer = make_tokenizer(tmp_path)
    tokenizer.chat_template = NESTED_LOOPS
    encoder = RowEncoder(tokenizer, use_chat_template=True, loss_on="completion", max_length=64)
    started = time.monotonic()
    with pytest.raises(RunnerError, match="chat template took more than"):
        encoder.encode_sft({"prompt": "q", "completion": "a"}, "prompt_completion")
    assert time.monotonic() - started < TEMPLATE_SECONDS + 3


def test_an_honest_template_encodes(tmp_path):
    encoder = RowEncoder(make_tokenizer(tmp_path), use_chat_template=True, loss_on="completion", max_length=64)
    encoded = encoder.encode_sft({"prompt": "q", "completion": "a"}, "prompt_completion")
    assert any(encoded.trained) and not all(encoded.trained)
