"""What runner prints from files and jobs cannot drive the operator's terminal (issue 20)."""

from runner.terminal import printable

HOSTILE = "name\x1b]0;pwned\x07\x1b[2J\r\u202eevil\x9b31m\x00"


def test_control_sequences_are_shown_not_sent():
    shown = printable(HOSTILE)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in shown)
    assert shown == "name\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\u202eevil\\x9b31m\\x00"


def test_text_newlines_and_tabs_are_untouched():
    text = "Q: What is your name?\n\tA: Chatty — ünïcödé 名前"
    assert printable(text) == text
