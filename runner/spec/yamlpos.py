"""Safe YAML loading that keeps the position of every key and value.

PyYAML is used only to *compose* the node graph (no constructors run, so no tag can build
an object). We then build plain dicts, lists and scalars ourselves, which lets us:
report duplicate keys (PyYAML keeps the last one silently), refuse tags and merge keys,
bound alias expansion ("billion laughs"), and remember where each value came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.spec.diagnostics import Diagnostic, Span

MAX_FILE_BYTES = 1024 * 1024
MAX_VALUES = 20_000
"""Values built from one file, aliases expanded; far above any real spec."""

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
    def __init__(self, summary: str, node: yaml.Node | None, hint: str | None = None, detail: str = ""):
        super().__init__(summary)
        self.summary, self.node, self.hint, self.detail = summary, node, hint, detail


def _span(node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def load_yaml(path: Path, display_name: str | None = None) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """Read a spec file; return its document, or the diagnostics that say why it cannot be read."""
    name = display_name or str(path)

    def fail(summary: str, span: Span | None = None, hint: str | None = None, detail: str = ""):
        return None, [Diagnostic("error", summary, name, span=span, hint=hint, detail=detail)]

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return fail(f"file is {size:,} bytes; a spec may be at most {MAX_FILE_BYTES:,}",
                        hint="a spec names its data files; it does not contain the data")
        raw = path.read_bytes()
    except IsADirectoryError:
        return fail("is a directory, not a spec file")
    except OSError as error:
        return fail(f"cannot read the file: {error.strerror or error}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return fail(f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start})",
                    Span(line, column, line, column + 1), hint="save the file as UTF-8")
    text = text.removeprefix("\ufeff")

    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        span = Span(mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2) if mark else None
        summary = f"YAML syntax error: {error.problem or error.context}"
        detail = f"while {error.context}" if error.context and error.problem else ""
        return fail(summary, span, detail=detail)
    except yaml.YAMLError as error:
        return fail(f"YAML error: {error}")

    nodes = [node for node in nodes if node is not None]
    if not nodes:
        return fail("file is empty", hint="start from an example in specs/examples/")
    if len(nodes) > 1:
        return fail("file holds several YAML documents; a spec is exactly one",
                    _span(nodes[1]), hint="put each job in its own file")
    root = nodes[0]
    if not isinstance(root, yaml.MappingNode):
        return fail("a spec must be a mapping of keys (version, name, method, ...)", _span(root))

    document = YamlDocument(name, None)
    builder = _Builder(document)
    try:
        document.data = builder.build(root, ())
    except _Problem as problem:
        span = _span(problem.node) if problem.node is not None else None
        return fail(problem.summary, span, problem.hint, problem.detail)
    return document, builder.diagnostics


class _Builder:
    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.values_built = 0
        self.diagnostics: list[Diagnostic] = []

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        self.values_built += 1
        if self.values_built > MAX_VALUES:
            raise _Problem(f"aliases expand to more than {MAX_VALUES:,} values", node,
                           hint="a spec needs no deep alias chains; write the values out")
        self.document.value_spans[path] = _span(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                raise self._tag_problem(node)
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict:
        if node.tag != _TAG + "map":
            raise self._tag_problem(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                raise _Problem("merge keys (<<) are not supported", key_node,
                               hint="write the keys out; a spec should read on its own")
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise _Problem("keys must be plain names", key_node)
            child = path + (key,)
            if key in result:
                first = self.document.key_spans[child]
                self.diagnostics.append(Diagnostic(
                    "error", f"duplicate key '{key}'", self.document.file, format_path(child),
                    _span(key_node), detail=f"first defined at line {first.line}",
                    hint="YAML keeps only one of them; remove the other"))
                continue
            self.document.key_spans[child] = _span(key_node)
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag not in _SCALAR_TAGS:
            raise self._tag_problem(node)
        plain = not node.style  # the C parser marks plain scalars with '', the Python one with None
        if not plain or tag in (_TAG + "str", _TAG + "timestamp"):
            if plain and _FLOAT_WITHOUT_DOT.match(value):
                return float(value.replace("_", ""))
            return value
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            # YAML 1.1 also reads yes/no/on/off as booleans; we keep them as text, so that
            # `country: no` stays a string and a boolean field asks for true or false.
            return True if value in _TRUE else False if value in _FALSE else value
        if tag == _TAG + "int":
            return _integer(value)
        return _float(value)

    @staticmethod
    def _tag_problem(node: yaml.Node) -> _Problem:
        return _Problem(f"YAML tag '{node.tag}' is not allowed", node,
                        hint="specs hold plain mappings, lists, strings and numbers only")


def _integer(text: str) -> int | str:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    try:
        if digits.startswith(("0x", "0X")):
            return sign * int(digits[2:], 16)
        if digits.startswith(("0o", "0O")):
            return sign * int(digits[2:], 8)
        if digits.startswith(("0b", "0B")):
            return sign * int(digits[2:], 2)
        return sign * int(digits, 10)
    except ValueError:
        return text  # e.g. YAML 1.1 sexagesimal "1:30": keep the text, let the field say what it wants


def _float(text: str) -> float:
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
        return text  # type: ignore[return-value]
