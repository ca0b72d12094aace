"""Safe YAML loading that keeps the position of every key and value.

PyYAML is used only to *parse* (its event stream: no constructors run, so no tag can build an
object, and no recursion). We build plain dicts, lists and scalars ourselves, which lets us:
report duplicate keys (PyYAML keeps the last one silently), refuse tags and merge keys, bound
alias expansion ("billion laughs"), depth and numbers, refuse an alias inside the value it names,
and remember where each value came from. Whatever the file holds, the result is a document or
diagnostics, never an exception.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.readers import FileTooLarge, UnreadableFile, read_regular
from runner.spec.diagnostics import Diagnostic, Span
from runner.spec.jobs import MAX_SPEC_BYTES

MAX_FILE_BYTES = MAX_SPEC_BYTES
MAX_VALUES = 20_000
"""Values built from one file, aliases expanded; far above any real spec."""
MAX_TEXT = 2 * MAX_FILE_BYTES
"""Characters of text (keys and scalars) built from one file, aliases expanded: an alias repeats a
value without its bytes being in the file, and what is built is copied again by every later stage."""
MAX_DEPTH = 32
"""Levels of nesting, aliases expanded; a spec has about four."""
MAX_INTEGER = 2**63 - 1
_TOO_LARGE = "this number is too large (a spec's numbers fit in 64 bits)"
_TOO_LARGE_HINT = "settings are counts and sizes; write an ordinary number"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Control characters (tabs and newlines aside) and lone surrogates: in a path they truncate or
fail, in a name they hide what is shown; no setting needs them."""
_RESOLVER = yaml.resolver.Resolver()

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")}
_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")  # YAML 1.2 floats like 2e-4
_TRUE, _FALSE = {"true", "True", "TRUE"}, {"false", "False", "FALSE"}

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class YamlDocument:
    """The plain data of a YAML file, and where each value and key came from."""

    file: str
    data: Any
    value_spans: dict[FieldPath, Span] = field(default_factory=dict)
    key_spans: dict[FieldPath, Span] = field(default_factory=dict)

    def locate(self, path: FieldPath, *, key: bool = False) -> Span | None:
        """The span of `path`, or of its nearest ancestor that exists in the file."""
        path = tuple(path)
        while True:
            spans = self.key_spans if key else self.value_spans
            if path in spans:
                return spans[path]
            if path in self.value_spans:
                return self.value_spans[path]
            if not path:
                return None
            path = path[:-1]


class _Problem(Exception):
    def __init__(self, summary: str, span: Span | None, hint: str | None = None, detail: str = ""):
        super().__init__(summary)
        self.summary, self.span, self.hint, self.detail = summary, span, hint, detail


def _span(start: yaml.Mark, end: yaml.Mark) -> Span:
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _event_span(event: yaml.Event) -> Span:
    return _span(event.start_mark, event.end_mark)


def load_yaml(path: Path, display_name: str | None = None) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """Read a spec file; return its document, or the diagnostics that say why it cannot be read."""
    name = display_name or str(path)

    def fail(summary: str, span: Span | None = None, hint: str | None = None, detail: str = ""):
        return None, [Diagnostic("error", summary, name, span=span, hint=hint, detail=detail)]

    try:
        raw = read_regular(path, MAX_FILE_BYTES)
    except IsADirectoryError:
        return fail("is a directory, not a spec file")
    except FileTooLarge as error:
        size = f"{error.size:,} bytes" if error.size is not None else "growing"
        return fail(f"file is {size}; a spec may be at most {MAX_FILE_BYTES:,}",
                    hint="a spec names its data files; it does not contain the data")
    except UnreadableFile as error:
        return fail(f"cannot read the file: {str(error).replace(str(path), 'it')}")
    except OSError as error:
        return fail(f"cannot read the file: {error.strerror or error}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return fail(f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start})",
                    Span(line, column, line, column + 1), hint="save the file as UTF-8")
    return parse_yaml(text.removeprefix("\ufeff"), name)


def parse_yaml(text: str, name: str) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """YAML text (a spec's, or another mapping a spec leads runner to read, such as a dataset README's
    front matter) within the same bounds: its document, or the diagnostics that say why there is none."""

    def fail(summary: str, span: Span | None = None, hint: str | None = None, detail: str = ""):
        return None, [Diagnostic("error", summary, name, span=span, hint=hint, detail=detail)]

    document = YamlDocument(name, None)
    builder = _Builder(document)
    try:
        document.data = builder.build(yaml.parse(text, Loader=_Loader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        span = Span(mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2) if mark else None
        summary = f"YAML syntax error: {error.problem or error.context}"
        return fail(summary, span, detail=error.context if error.context and error.problem else "")
    except yaml.YAMLError as error:
        return fail(f"YAML error: {' '.join(str(error).split())}")
    except _Problem as problem:
        return fail(problem.summary, problem.span, problem.hint, problem.detail)
    return document, builder.diagnostics


@dataclass
class _Anchored:
    """A value with an anchor (`&name`), kept for its aliases (`*name`)."""

    value: Any
    spans: list[tuple[bool, FieldPath, Span]]
    """(is a key span, path relative to the value, span) of everything in it"""
    size: int
    """Values in it, itself included."""
    depth: int
    text: int
    """Characters of its keys and scalars."""


@dataclass
class _Open:
    """A mapping or sequence whose end has not been read yet."""

    value: dict | list
    path: FieldPath
    start: yaml.Mark
    anchor: str | None
    first_span: int
    """Where its contents start in the builder's span log."""
    discarded: bool
    """Inside the value of a duplicate key: built, but neither kept nor located."""
    text_start: int = 0
    """The builder's text count when it opened: what it holds is the count at its end, less this."""
    key: str | None = None
    """A mapping's key whose value comes next."""
    key_discarded: bool = False

    def child_path(self) -> FieldPath:
        return self.path + ((self.key,) if isinstance(self.value, dict) else (len(self.value),))

    @property
    def wants_key(self) -> bool:
        return isinstance(self.value, dict) and self.key is None


_NOTHING = object()


class _Builder:
    """Plain data from the parser's events, without recursion: the depth of the input decides
    nothing but a check against MAX_DEPTH. Aliases are expanded (and counted, and checked for
    depth) from the values they name; an alias inside the value it names is refused."""

    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.values_built = 0
        self.text_built = 0
        self.diagnostics: list[Diagnostic] = []
        self.anchors: dict[str, _Anchored] = {}
        self.spans: list[tuple[bool, FieldPath, Span, bool]] = []
        """(is a key span, path, span, discarded), in the order read"""
        self.key_seen: dict[FieldPath, Span] = {}

    def build(self, events) -> Any:
        stack: list[_Open] = []
        root = _NOTHING
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent) and root is not _NOTHING:
                raise _Problem("file holds several YAML documents; a spec is exactly one", _event_span(event),
                               hint="put each job in its own file")
            if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentStartEvent,
                                  yaml.DocumentEndEvent)):
                continue
            parent = stack[-1] if stack else None
            if isinstance(event, yaml.CollectionEndEvent):
                value = self._close(stack.pop(), event)
            elif parent is not None and parent.wants_key:
                self._key(parent, event)
                continue
            else:
                path = parent.child_path() if parent else ()
                discarded = parent is not None and (parent.discarded or parent.key_discarded)
                if parent is None and not isinstance(event, yaml.MappingStartEvent):
                    raise _Problem("a spec must be a mapping of keys (version, name, method, ...)",
                                   _event_span(event))
                if isinstance(event, yaml.CollectionStartEvent):
                    stack.append(self._open(event, path, discarded))
                    continue
                if isinstance(event, yaml.AliasEvent):
                    value = self._alias(event, path, discarded, stack)
                else:
                    value = self._scalar_value(event, path, discarded)
            if not stack:
                root = value
            else:
                self._place(stack[-1], value)
        if root is _NOTHING:
            raise _Problem("file is empty", None, hint="start from an example in specs/examples/")
        for is_key, path, span, discarded in self.spans:
            if not discarded:
                (self.document.key_spans if is_key else self.document.value_spans)[path] = span
        return root

    def _count(self, values: int, text: int, event: yaml.Event, aliased: bool) -> None:
        """Add what is built (values, and characters of text) and refuse a file past either bound."""
        self.values_built += values
        self.text_built += text
        for built, limit, what in ((self.values_built, MAX_VALUES, "values"),
                                   (self.text_built, MAX_TEXT, "characters of text")):
            if built > limit:
                if aliased:
                    raise _Problem(f"aliases expand to more than {limit:,} {what}", _event_span(event),
                                   hint="an alias repeats a value without its bytes; write the values out once")
                raise _Problem(f"the file holds more than {limit:,} {what}", _event_span(event),
                               hint="a spec names its data files; it does not contain the data")

    def _open(self, event: yaml.CollectionStartEvent, path: FieldPath, discarded: bool) -> _Open:
        if len(path) >= MAX_DEPTH:
            raise _Problem(f"values are nested more than {MAX_DEPTH} levels deep", _event_span(event),
                           hint="a spec is a few levels of mappings and lists")
        mapping = isinstance(event, yaml.MappingStartEvent)
        expected = _TAG + ("map" if mapping else "seq")
        if event.tag not in (None, "!", expected):
            raise self._tag_problem(event.tag, event)
        self._count(1, 0, event, aliased=False)
        return _Open({} if mapping else [], path, event.start_mark, event.anchor, len(self.spans), discarded,
                      self.text_built)

    def _close(self, frame: _Open, event: yaml.Event) -> dict | list:
        self.spans.append((False, frame.path, _span(frame.start, event.end_mark), frame.discarded))
        if frame.anchor is not None:
            inner = self.spans[frame.first_span:]
            base = len(frame.path)
            self.anchors[frame.anchor] = _Anchored(
                frame.value, [(is_key, path[base:], span) for is_key, path, span, _ in inner],
                size=sum(1 for is_key, *_ in inner if not is_key),
                depth=max(len(path) - base for _, path, _, _ in inner), text=self.text_built - frame.text_start)
        return frame.value

    def _place(self, frame: _Open, value: Any) -> None:
        if isinstance(frame.value, list):
            frame.value.append(value)
            return
        if not frame.key_discarded:
            frame.value[frame.key] = value
        frame.key, frame.key_discarded = None, False

    def _key(self, frame: _Open, event: yaml.Event) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            raise _Problem("keys must be plain names", _event_span(event))
        tag = self._resolve(event)
        if tag == _TAG + "merge":
            raise _Problem("merge keys (<<) are not supported", _event_span(event),
                           hint="write the keys out; a spec should read on its own")
        key = self._scalar(tag, event)
        if not isinstance(key, str):
            raise _Problem("keys must be plain names", _event_span(event))
        self._count(0, len(key), event, aliased=False)
        child = frame.path + (key,)
        if key in frame.value:
            first = self.key_seen[child]
            if not frame.discarded:
                self.diagnostics.append(Diagnostic(
                    "error", f"duplicate key '{key}'", self.document.file, format_path(child),
                    _event_span(event), detail=f"first defined at line {first.line}",
                    hint="YAML keeps only one of them; remove the other"))
            frame.key, frame.key_discarded = key, True
            return
        self.key_seen[child] = _event_span(event)
        self.spans.append((True, child, self.key_seen[child], frame.discarded))
        frame.key = key

    def _alias(self, event: yaml.AliasEvent, path: FieldPath, discarded: bool, stack: list[_Open]) -> Any:
        anchored = self.anchors.get(event.anchor)
        if any(frame.anchor == event.anchor for frame in stack):
            raise _Problem(f"alias *{event.anchor} is used inside the value it names", _event_span(event),
                           hint="a value cannot contain itself; write the values out")
        if anchored is None:
            raise _Problem(f"alias *{event.anchor} names no anchor (&{event.anchor}) above it", _event_span(event))
        if len(path) + anchored.depth >= MAX_DEPTH:
            raise _Problem(f"values are nested more than {MAX_DEPTH} levels deep (aliases expanded)",
                           _event_span(event), hint="a spec is a few levels of mappings and lists")
        self._count(anchored.size, anchored.text, event, aliased=True)
        self.spans.extend((is_key, path + relative, span, discarded) for is_key, relative, span in anchored.spans)
        return _copy(anchored.value)

    def _scalar_value(self, event: yaml.ScalarEvent, path: FieldPath, discarded: bool) -> Any:
        self._count(1, len(event.value), event, aliased=False)
        value = self._scalar(self._resolve(event), event)
        span = _event_span(event)
        self.spans.append((False, path, span, discarded))
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(value, [(False, (), span)], size=1, depth=0, text=len(event.value))
        return value

    @staticmethod
    def _resolve(event: yaml.ScalarEvent) -> str:
        if event.tag is None or event.tag == "!":
            return _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
        return event.tag

    def _scalar(self, tag: str, event: yaml.ScalarEvent) -> Any:
        value = event.value
        if tag not in _SCALAR_TAGS:
            raise self._tag_problem(tag, event)
        plain = not event.style  # the C parser marks plain scalars with '', the Python one with None
        if not plain or tag in (_TAG + "str", _TAG + "timestamp"):
            control = _CONTROL.search(value)
            if control:
                raise _Problem(f"text holds the control character U+{ord(control.group()):04X}", _event_span(event),
                               hint="names, paths and settings are printable text")
            if plain and _FLOAT_WITHOUT_DOT.match(value):
                return _float(value)
            return value
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            # YAML 1.1 also reads yes/no/on/off as booleans; we keep them as text, so that
            # `country: no` stays a string and a boolean field asks for true or false.
            return True if value in _TRUE else False if value in _FALSE else value
        if tag == _TAG + "int":
            return _integer(value, event)
        return _float(value)

    @staticmethod
    def _tag_problem(tag: str, event: yaml.Event) -> _Problem:
        return _Problem(f"YAML tag '{tag}' is not allowed", _event_span(event),
                        hint="specs hold plain mappings, lists, strings and numbers only")


def _copy(value: Any) -> Any:
    """A fresh copy of an anchored value (its depth is checked before: the recursion is bounded)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _integer(text: str, event: yaml.ScalarEvent) -> int | str:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2].lower(), 10)
    if base != 10:
        digits = digits[2:]
    if len(digits.lstrip("0")) > 64:  # checked before converting: a number is never megabytes of digits
        raise _Problem(_TOO_LARGE, _event_span(event), hint=_TOO_LARGE_HINT)
    try:
        value = sign * int(digits, base)
    except ValueError:
        return text  # e.g. YAML 1.1 sexagesimal "1:30": keep the text, let the field say what it wants
    if abs(value) > MAX_INTEGER:
        raise _Problem(_TOO_LARGE, _event_span(event), hint=_TOO_LARGE_HINT)
    return value


def _float(text: str) -> float | str:
    lowered = text.replace("_", "").lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    try:
        return float(lowered)
    except ValueError:
        return text
