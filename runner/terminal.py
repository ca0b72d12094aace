"""Text from files and jobs, made safe to print on a terminal.

A data cell, a file name, a model's answer or a job's log line may hold terminal control sequences:
ESC starts sequences that set the window title, clear the screen, move the cursor over earlier lines,
or (on some terminals) write the clipboard; a carriage return overwrites the line; bidirectional
overrides reorder what is shown. `printable` shows each such character as an escape (`\\x1b`,
`\\u202e`) and leaves text, newlines and tabs alone. runner's own colours are added after it.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
