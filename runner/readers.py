"""Bounded readers of files a spec names (or a user drops into a watched folder).

Anything read here may be hostile: a FIFO or a device where a file should be (reading it
blocks forever, or never ends), a file far larger than its kind ever is, or JSON nested
deep enough to exhaust the parser's recursion. Every reader here refuses those with an
error that says what the file is, in bounded time and memory. No torch; stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

from runner import confine

MAX_JSON_DEPTH = 64
"""Nesting of a data row or a model header; real ones stay under 10."""

_JSON_STRUCTURE = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class UnreadableFile(OSError):
    """A path that is not a regular file, or is larger than its kind may be. An OSError, so that
    callers that already report unreadable files report these the same way; `str()` is the reason."""


class FileTooLarge(UnreadableFile):
    def __init__(self, path: Path, size: int | None, limit: int) -> None:
        shown = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
        super().__init__(f"{path} is {shown}; at most {limit:,} are read")
        self.size, self.limit = size, limit


def describe_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading. The open itself never blocks (O_NONBLOCK: a FIFO with no
    writer would), and anything that is not a regular file once opened (FIFO, device, socket,
    directory; symbolic links are followed) is refused before a byte is read, as is a file the
    active confinement (runner.confine: the watch daemon's) does not let a spec read."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(f"{path} is {describe_kind(mode)}, not a regular file")
        confine.check_descriptor(descriptor, path)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise FileTooLarge(path, size, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise FileTooLarge(path, None, limit)
    return data


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` levels deep. A linear scan
    without recursion, done before `json.loads` (whose recursion such text would exhaust)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth, in_string = 0, False
    for match in _JSON_STRUCTURE.finditer(raw):
        token = match.group()
        if in_string:
            in_string = token != b'"'
        elif token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def loads_bounded(raw: bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, refusing text nested more than `limit` levels and strings that are not text (an
    escaped lone surrogate such as "\\ud800": no UTF-8 can hold it, and a tokenizer fails on it later),
    each a ValueError, like bad JSON."""
    if nested_deeper_than(raw, limit):
        raise ValueError(f"nested more than {limit} levels deep")
    value = json.loads(raw)
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then are the strings looked at
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                code = ord(item[error.start])
                raise ValueError(f"a string holds a lone surrogate \\u{code:04x} (half of a UTF-16 pair), "
                                 "which is not text") from None
