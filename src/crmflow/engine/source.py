"""Reading a flow document (YAML 1.2 or JSON text) into plain data and a map of line numbers.

`12:30` stays a string and `on:` stays a key (YAML 1.2, not PyYAML's 1.1). Every problem found
later can say on which line it is, because each key and item keeps the line it was read on.

The text comes from anyone who may call the API, so reading it is bounded: its size is checked
before parsing, and the plain data is built straight from ruamel's event stream (no composed node
graph, no round-trip objects) while counting. A document is refused, with the line, when it nests
deeper than `DocumentLimits.depth`, holds more than `.nodes` values once its aliases are expanded,
uses more than `.aliases` aliases, expands (through aliases) past its size cap, or writes a number
with more than `.number_digits` characters. A "billion laughs" therefore stops at the alias that
crosses a cap, before anything is copied, and the CPU spent is bounded by the size and node caps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.resolver import implicit_resolvers
from ruamel.yaml.scanner import Scanner, ScannerError
from ruamel.yaml.util import create_timestamp, timestamp_regexp

from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_NUMBER_CHARS",
    "DocumentLimits",
    "ParsedSource",
    "decode_document",
    "detect_format",
    "join_path",
    "parse_source",
    "plain_data",
]

# Real flows are under 100 KB; the server's setting (max_document_chars) is passed in by callers.
MAX_DOCUMENT_CHARS = 1_000_000
# The caps of every structured input crmflow parses, the same for a YAML or JSON document and for
# a JSON request body (`api.limits` checks bodies with them), so that a flow is held to the same
# bounds whether it comes from a file or over the API. No input crmflow takes nests deeper than a
# few levels (a saved query's groups are the deepest), and 64 stays far below Python's recursion
# limit; no amount, id or count is written with more than 100 characters, and refusing longer
# numbers before int() converts them avoids its quadratic time (and its ValueError past 4,300
# digits).
MAX_NESTING_DEPTH = 64
MAX_NUMBER_CHARS = 100
Format = Literal["yaml", "json"]


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may hold. The node cap is what bounds the parsing time (ruamel's scanner
    spends some 50 us per value): at the cap, the worst shape (a flow-style list of tiny items)
    is refused after about one second. Real flows hold about 100 values per KB."""

    chars: int = MAX_DOCUMENT_CHARS  # the text, and the text once aliases are expanded
    nodes: int = 20_000  # mappings, lists and scalars (keys included), aliases expanded
    aliases: int = 1_000
    depth: int = MAX_NESTING_DEPTH  # nested mappings and lists
    number_digits: int = MAX_NUMBER_CHARS  # characters of one number (int or float)


@dataclass(frozen=True)
class ParsedSource:
    """Plain data (dicts, lists, str, int, float, bool, None) and 1-based lines by path."""

    data: Any
    lines: Mapping[str, int] = field(default_factory=dict)
    source: str = "<input>"

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest parent that has one (a missing key's mapping)."""
        while True:
            if path in self.lines:
                return self.lines[path]
            parent = parent_path(path)
            if not path or parent == path:
                return None
            path = parent


def join_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def parent_path(path: str) -> str:
    if path.endswith("]") and "[" in path:
        return path[: path.rindex("[")]
    dot = path.rfind(".")
    return path[:dot] if dot >= 0 else ""


def detect_format(text: str) -> Format:
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def decode_document(data: bytes, *, source: str = "<input>", what: str | None = None) -> str:
    """`data` as UTF-8 text; a clear error naming the offset of the first bad byte otherwise.

    Strict on purpose: replacing bad bytes with U+FFFD would save a document the sender never
    wrote. A UTF-8 byte-order mark is dropped (editors on Windows add one)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        bad = data[start : start + 1].hex()
        line = data.count(b"\n", 0, start) + 1
        raise InvalidInputError(
            what or source,
            [
                Problem(
                    "",
                    f"is not UTF-8 text: byte {start} (0x{bad}, line {line}) is invalid "
                    f"({exc.reason})",
                    "save or send the document encoded as UTF-8",
                    line,
                    source,
                )
            ],
        ) from None


def parse_source(
    text: str,
    *,
    source: str = "<input>",
    fmt: Format | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
    limits: DocumentLimits | None = None,
) -> ParsedSource:
    """Parse `text`; raises InvalidInputError (with the line) when it is not YAML / JSON or
    when it goes past a limit (`max_chars` overrides `limits.chars`)."""
    limits = limits or DocumentLimits()
    if max_chars != limits.chars:
        limits = DocumentLimits(
            max_chars, limits.nodes, limits.aliases, limits.depth, limits.number_digits
        )
    if len(text) > limits.chars:
        raise InvalidInputError(
            source,
            [
                Problem(
                    "",
                    f"the document has {len(text):,} characters, more than the "
                    f"{limits.chars:,} allowed",
                    "split it into smaller documents (a flow is rarely over 100 KB)",
                    source=source,
                )
            ],
        )
    fmt = fmt or detect_format(text)
    if fmt == "json":
        _check_json_syntax(text, source, limits)
    builder = _Builder(source, limits)
    try:
        data = builder.build(_events(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise InvalidInputError(
            source,
            [Problem("", f"not valid YAML: {message}", _yaml_hint(message), line, source)],
        ) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidInputError(
            source, [Problem("", f"not valid YAML: {exc}", source=source)]
        ) from None
    return ParsedSource(data=data, lines=builder.lines, source=source)


def plain_data(data: Any, *, max_depth: int = DocumentLimits.depth) -> Any:
    """A deep copy of `data` with only JSON types, text keys and ISO dates."""
    return _plain(data, 0, max_depth)


def _events(text: str) -> Iterator[Event]:
    loader = YAML(typ="safe", pure=True)
    loader.Scanner = _Scanner
    yield from loader.parse(text)


class _Scanner(Scanner):
    """ruamel's scanner with its simple-key bookkeeping made linear.

    The scanner remembers one possible simple key per flow level and, before every token, checks
    all of them; a line of 1,000 `[` made that quadratic (seconds for 1 KB). Keys are only added
    at the reading position, after the key of their level is removed, so the dict holds them in
    the order they were read: the first one is the oldest, and once one is still fresh (on this
    line, within 1024 characters) every later one is too."""

    def next_possible_simple_key(self) -> Any:
        for key in self.possible_simple_keys.values():
            return key.token_number
        return None

    def stale_possible_simple_keys(self) -> None:
        reader = self.reader
        for level, key in list(self.possible_simple_keys.items()):
            if key.line == reader.line and reader.index - key.index <= 1024:
                return
            if key.required:
                raise ScannerError(
                    "while scanning a simple key",
                    key.mark,
                    "could not find expected ':'",
                    reader.get_mark(),
                )
            del self.possible_simple_keys[level]


def _check_json_syntax(text: str, source: str, limits: DocumentLimits) -> None:
    """JSON's own messages for JSON syntax errors (the C parser is fast). Numbers and depth
    past the limits are left to the YAML pass, which says on which line they are."""

    def number(digits: str) -> int:
        if len(digits) > limits.number_digits:
            raise _NumberTooLongError
        return 0

    try:
        json.loads(text, parse_int=number, parse_float=number)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            source,
            [Problem("", f"not valid JSON: {exc.msg}", "check the syntax", exc.lineno, source)],
        ) from None
    except (_NumberTooLongError, RecursionError):
        pass


class _NumberTooLongError(Exception):
    pass


def _yaml_hint(message: str) -> str:
    if "duplicate key" in message:
        return "each key may appear once in a mapping; remove or rename one"
    if "tab" in message or "\\t" in message:
        return "indent with spaces, not tabs"
    return "check the indentation and quote values containing ': ' or '#'"


# YAML 1.2 core schema resolution of plain scalars, as ruamel's resolver defines it.
_CORE = "tag:yaml.org,2002:"
_RESOLVERS = [
    (tag, regexp, first)
    for versions, tag, regexp, first in implicit_resolvers
    if (1, 2) in versions
]
_MERGE = object()  # the `<<` key
_NODE_EVENTS = (
    ScalarEvent,
    AliasEvent,
    MappingStartEvent,
    SequenceStartEvent,
    MappingEndEvent,
    SequenceEndEvent,
)


@dataclass
class _Anchored:
    value: Any
    nodes: int
    chars: int
    height: int


@dataclass
class _Collection:
    path: str
    anchor: str | None
    out: dict[str, Any] | list[Any]
    nodes: int = 1
    chars: int = 0
    height: int = 1
    key: Any = None  # mappings: the key waiting for its value (a str or _MERGE)
    key_lines: dict[str, int] = field(default_factory=dict)
    merges: list[tuple[Any, int]] = field(default_factory=list)  # (value, line of `<<`)


class _Builder:
    """Plain data from parser events, counting as it goes (see the module text)."""

    def __init__(self, source: str, limits: DocumentLimits) -> None:
        self.source = source
        self.limits = limits
        self.lines: dict[str, int] = {}
        self.anchors: dict[str, _Anchored] = {}
        self.stack: list[_Collection] = []
        self.nodes = 0
        self.chars = 0
        self.aliases = 0
        self.documents = 0

    def build(self, events: Iterator[Event]) -> Any:
        root: Any = None
        for event in events:
            if isinstance(event, DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    self._refuse(
                        event,
                        "expected one document, found a second one",
                        "put one flow in each file, or remove the `---` line",
                    )
                continue
            if not isinstance(event, _NODE_EVENTS):
                continue  # stream and document ends
            done = self._take(event)
            if done is not None:
                root = done[0]
        return root

    def _take(self, event: Event) -> tuple[Any] | None:
        """Handle one node event; the root value once the top-level node is complete."""
        if isinstance(event, MappingEndEvent | SequenceEndEvent):
            finished = self.stack.pop()
            value = self._finish(finished)
            if finished.anchor is not None:
                self.anchors[finished.anchor] = _Anchored(
                    value, finished.nodes, finished.chars, finished.height
                )
            return self._place(value, finished.nodes, finished.chars, finished.height, None)
        parent = self.stack[-1] if self.stack else None
        wants_key = parent is not None and isinstance(parent.out, dict) and parent.key is None
        if isinstance(event, ScalarEvent):
            value = self._scalar(event, is_key=wants_key)
            self._count(event, 1, len(event.value), None)
            if event.anchor is not None:
                text = "<<" if value is _MERGE else value
                self.anchors[event.anchor] = _Anchored(text, 1, len(event.value), 1)
            if wants_key:
                assert parent is not None
                self._set_key(parent, value, event)
                return None
            return self._place(value, 1, len(event.value), 1, event)
        if isinstance(event, AliasEvent):
            return self._alias(event, parent, wants_key)
        if wants_key:
            self._refuse(event, "a key must be text, not a mapping or a list", "use a text key")
        assert isinstance(event, MappingStartEvent | SequenceStartEvent)
        self._count(event, 1, 0, None)
        if len(self.stack) + 1 > self.limits.depth:
            self._refuse(
                event,
                f"the document nests mappings and lists more than {self.limits.depth} levels deep",
                "flatten it: a flow needs far fewer levels",
            )
        path = self._child_path(parent, event)
        out: dict[str, Any] | list[Any] = {} if isinstance(event, MappingStartEvent) else []
        self.stack.append(_Collection(path, event.anchor, out))
        return None

    def _alias(
        self, event: AliasEvent, parent: _Collection | None, wants_key: bool
    ) -> tuple[Any] | None:
        name = event.anchor
        anchored = self.anchors.get(name)
        if anchored is None:
            self._refuse(
                event,
                f"the alias *{name} refers to no anchor defined before it (or to the mapping "
                "or list that contains it)",
                f"define &{name} earlier in the document",
            )
        assert anchored is not None
        self.aliases += 1
        if self.aliases > self.limits.aliases:
            self._refuse(
                event,
                f"the document uses more than {self.limits.aliases} aliases (*name)",
                "write the repeated parts out, or use fewer aliases",
            )
        self._count(event, anchored.nodes, anchored.chars, name)
        if len(self.stack) + anchored.height > self.limits.depth:
            self._refuse(
                event,
                f"the alias *{name} nests the document more than {self.limits.depth} levels deep",
                "flatten the anchored part or write it out",
            )
        if wants_key:
            assert parent is not None
            if isinstance(anchored.value, dict | list):
                self._refuse(event, "a key must be text, not a mapping or a list", "use text")
            self._set_key(parent, anchored.value, event)
            return None
        value = _copy(anchored.value)
        return self._place(value, anchored.nodes, anchored.chars, anchored.height, event)

    def _count(self, event: Event, nodes: int, chars: int, alias: str | None) -> None:
        self.nodes += nodes
        self.chars += chars
        if self.nodes > self.limits.nodes:
            where = f"the alias *{alias} expands it past" if alias else "it has more than"
            self._refuse(
                event,
                f"the document is too large: {where} {self.limits.nodes:,} values (mappings, "
                "lists, keys and scalars)",
                "split it into smaller documents"
                if alias is None
                else "use fewer aliases or write the repeated part once",
            )
        if self.chars > self.limits.chars:
            self._refuse(
                event,
                f"the alias *{alias} expands the document past {self.limits.chars:,} characters",
                "use fewer aliases or write the repeated part once",
            )

    def _child_path(self, parent: _Collection | None, event: Event) -> str:
        if parent is None:
            return ""
        if isinstance(parent.out, dict):
            return join_path(parent.path, parent.key if isinstance(parent.key, str) else "<<")
        child = join_path(parent.path, len(parent.out))
        self.lines[child] = event.start_mark.line + 1
        return child

    def _set_key(self, parent: _Collection, key: Any, event: Event) -> None:
        line = event.start_mark.line + 1
        if key is _MERGE:
            name = "<<"
        else:
            name = key if isinstance(key, str) else _key_text(key)
            parent.chars += len(name)
        first = parent.key_lines.get(name)
        if first is not None:
            self._refuse(
                event,
                f'found duplicate key "{name}" (first on line {first})',
                "each key may appear once in a mapping; remove or rename one",
            )
        parent.key_lines[name] = line
        parent.nodes += 1
        if key is _MERGE:
            parent.key = _MERGE
            return
        parent.key = name
        self.lines[join_path(parent.path, name)] = line

    def _place(
        self, value: Any, nodes: int, chars: int, height: int, event: Event | None
    ) -> tuple[Any] | None:
        """Put a finished value into its parent (or return it: the root)."""
        if not self.stack:
            return (value,)
        parent = self.stack[-1]
        parent.nodes += nodes
        parent.chars += chars
        parent.height = max(parent.height, height + 1)
        if isinstance(parent.out, dict):
            if parent.key is _MERGE:
                line = parent.key_lines["<<"]
                parent.merges.append((value, line))
            else:
                parent.out[parent.key] = value
            parent.key = None
        else:
            if event is not None:
                self.lines[join_path(parent.path, len(parent.out))] = event.start_mark.line + 1
            parent.out.append(value)
        return None

    def _finish(self, collection: _Collection) -> Any:
        out = collection.out
        if not isinstance(out, dict) or not collection.merges:
            return out
        # `<<: *defaults` (or a list of them): keys written in the mapping win, then the first
        # merged mapping that has the key, as YAML 1.1's merge type (kept by ruamel) says.
        for merged, line in collection.merges:
            sources = merged if isinstance(merged, list) else [merged]
            if not all(isinstance(s, dict) for s in sources):
                raise InvalidInputError(
                    self.source,
                    [
                        Problem(
                            join_path(collection.path, "<<"),
                            "a merge key `<<` takes a mapping (`<<: *defaults`) or a list of "
                            "mappings",
                            "point it at an anchored mapping, or quote the key if `<<` is text",
                            line,
                            self.source,
                        )
                    ],
                )
            for source in sources:
                for key, value in source.items():
                    if key not in out:
                        out[key] = value
                        self.lines[join_path(collection.path, key)] = line
        return out

    def _scalar(self, event: ScalarEvent, *, is_key: bool) -> Any:
        value: str = event.value
        tag = str(event.ctag) if event.ctag is not None else None
        if tag is None or tag == "!":
            if not event.implicit[0]:
                return value  # quoted: always text
            tag = _resolve(value)
        if tag == _CORE + "merge" and is_key and event.implicit[0]:
            return _MERGE
        if tag in (_CORE + "int", _CORE + "float"):
            return self._number(event, tag == _CORE + "int")
        if tag == _CORE + "bool":
            return value.lower() == "true"
        if tag == _CORE + "null":
            return None
        if tag == _CORE + "timestamp":
            match = timestamp_regexp.match(value)
            try:
                if match is None:
                    raise ValueError(value)
                stamp: date | datetime = create_timestamp(**match.groupdict())
            except (ValueError, OverflowError):
                self._refuse(event, f"{value!r} is not a valid date or time", "quote it if text")
            return stamp.isoformat()
        return value

    def _number(self, event: ScalarEvent, integral: bool) -> Any:
        text: str = event.value
        if len(text) > self.limits.number_digits:
            self._refuse(
                event,
                f"a number of {len(text):,} characters; at most "
                f"{self.limits.number_digits} are accepted",
                "quote it if it is text (an identifier, a code)",
            )
        plain = text.replace("_", "")
        try:
            if integral:
                sign = -1 if plain.startswith("-") else 1
                digits = plain.lstrip("+-")
                for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
                    if digits.startswith(prefix):
                        return sign * int(digits[2:], base)
                return sign * int(digits)
            lowered = plain.lower()
            if lowered.lstrip("+-") in (".inf", ".nan"):
                return float(lowered.replace(".", ""))
            number = float(plain)
        except ValueError:
            self._refuse(event, f"{text!r} is not a valid number", "quote it if it is text")
        if math.isinf(number):
            self._refuse(
                event,
                f"the number {text} is too large for a floating-point number",
                "use a smaller number, or quote it if it is text",
            )
        return number

    def _refuse(self, event: Event, message: str, hint: str) -> Any:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        path = self.stack[-1].path if self.stack else ""
        raise InvalidInputError(self.source, [Problem(path, message, hint, line, self.source)])


def _resolve(value: str) -> str:
    first = value[:1]
    for tag, regexp, firsts in _RESOLVERS:
        if first in firsts and regexp.match(value):
            return str(tag)
    return _CORE + "str"


def _copy(value: Any) -> Any:
    # Aliased parts are copied so that no caller can change two places at once; the node cap
    # was charged for the copy before it is made.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _plain(node: Any, depth: int, max_depth: int) -> Any:
    if depth > max_depth:
        raise InvalidInputError(
            "the document",
            [
                Problem(
                    "",
                    f"nests mappings and lists more than {max_depth} levels deep",
                    "flatten it",
                )
            ],
        )
    if isinstance(node, Mapping):
        return {_key_text(k): _plain(v, depth + 1, max_depth) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v, depth + 1, max_depth) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        return node.isoformat()
    if node is None:
        return None
    return str(node)


def _key_text(key: Any) -> str:
    # YAML allows keys such as `true:` or `1:`; the flow document only has text keys.
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)
