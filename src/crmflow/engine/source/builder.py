"""Plain data and the line of each path, built straight from ruamel's event stream while counting.

No composed node graph and no round-trip objects: each event is placed into its parent as it
comes, and every value (aliases expanded), character, alias and level of nesting is counted
against the document's caps before anything is copied, so a document past a cap is refused at
the event that crosses it, with its line (see `crmflow.engine.source`).

Two things YAML reads that would change what a document means, or that no database stores, are
refused at the node that holds them: an explicit tag (`!record.newsletter && x`, read as the tag
`!record.newsletter`, the anchor `&&` and the text `x`, would otherwise keep only `x`), and a key
or value holding a NUL character or a lone UTF-16 surrogate (written as the escapes `\\0` or
`\\ud800`: PostgreSQL refuses a NUL and SQLite keeps it, and neither can store a surrogate). A
surrogate pair (`\\ud83d\\ude00`, as JSON writes characters past U+FFFF) is read as the one
character it stands for, as JSON readers do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

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
from ruamel.yaml.util import create_timestamp, timestamp_regexp

from crmflow.engine.source.document import DocumentLimits, join_path, key_text
from crmflow.errors import InvalidInputError, Problem, shown

__all__ = ["DocumentBuilder"]

# YAML 1.2 core schema resolution of plain scalars, as ruamel's resolver defines it.
_CORE = "tag:yaml.org,2002:"
_RESOLVERS = [
    (tag, regexp, first)
    for versions, tag, regexp, first in implicit_resolvers
    if (1, 2) in versions
]
_MERGE = object()  # the `<<` key
# Text no database stores the same way (as `engine.recordtypes.values` refuses in a field): a NUL
# (PostgreSQL refuses it, SQLite keeps it) and lone UTF-16 surrogates (not characters: they cannot
# be encoded to UTF-8 at all). Only a double-quoted scalar can hold them, through an escape: the
# reader refuses them written as they are.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_EXAMPLE_CHARS = 60  # of the value quoted in the hint of a refused tag
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


class DocumentBuilder:
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
        if isinstance(event, ScalarEvent | MappingStartEvent | SequenceStartEvent) and (
            event.ctag is not None
        ):
            self._refuse_tag(event, parent, wants_key)
        if isinstance(event, ScalarEvent):
            content = self._text(event, parent, wants_key)
            value = self._scalar(event, content, is_key=wants_key)
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
            name = key if isinstance(key, str) else key_text(key)
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

    def _scalar(self, event: ScalarEvent, value: str, *, is_key: bool) -> Any:
        """The value of an untagged scalar (tags are refused before), as YAML 1.2 reads it."""
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

    def _text(self, event: ScalarEvent, parent: _Collection | None, is_key: bool) -> str:
        """The scalar's text, its surrogate pairs joined; refused when it holds a NUL or a lone
        surrogate. The common case costs two C-level scans, as `text_refusal`'s does."""
        value: str = event.value
        if "\x00" not in value and (value.isascii() or _SURROGATE.search(value) is None):
            return value
        if "\x00" not in value:
            # JSON writes a character past U+FFFF as a pair of escapes, which YAML reads as two
            # surrogates: join them, so that only lone ones remain.
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        found = _UNSTORABLE.search(value)
        if found is None:
            return value
        char, at = found.group(), found.start() + 1
        column = event.start_mark.column + 1
        what = f"the key {_quoted(value)}" if is_key else "the value"
        path = self._node_path(parent, is_key, _escaped(value))
        if char == "\x00":
            self._refuse(
                event,
                f"{what} at column {column} contains a NUL character (\\0) at character {at}; "
                "no text may hold one (PostgreSQL cannot store it)",
                "remove the NUL character (\\0)",
                path,
            )
        escape = f"\\u{ord(char):04x}"
        self._refuse(
            event,
            f"{what} at column {column} contains a lone UTF-16 surrogate ({escape}) at "
            f"character {at}, which is not a character (no database can store it)",
            f"remove the {escape} escape, or write the character itself",
            path,
        )
        return value

    def _refuse_tag(
        self,
        event: ScalarEvent | MappingStartEvent | SequenceStartEvent,
        parent: _Collection | None,
        is_key: bool,
    ) -> None:
        """Refuse a node with an explicit tag: crmflow reads none, and dropping it would change
        what the value says (`!record.newsletter && x` would be read as `x`)."""
        tag, local = _written_tag(event.ctag)
        line_start, line_end, start = _tag_span(event, tag)
        column = start - line_start + 1 if start >= 0 else event.start_mark.column + 1
        if not isinstance(event, ScalarEvent):
            kind = "mapping" if isinstance(event, MappingStartEvent) else "list"
            self._refuse(
                event,
                f"the {kind} at column {column} starts with {tag}, which YAML reads as a tag; "
                "crmflow reads no tags",
                f"remove {tag}",
                self._node_path(parent, is_key, ""),
            )
            return
        text: str = event.value
        what = "key" if is_key else "value"
        message = f"the {what} at column {column} starts with {tag}, which YAML reads as a tag"
        if not is_key:
            left = f"left as {shown(text)}" if text else "left empty"
            message += f", not as text (crmflow reads no tags; the value would be {left})"
        path = self._node_path(parent, is_key, _escaped(text))
        if local:
            written = _written_value(event, start, line_end)
            self._refuse(
                event,
                message,
                f"a {what} that starts with ! must be quoted, e.g. "
                f"{_example(parent, is_key, written)}",
                path,
            )
        self._refuse(
            event,
            message,
            f"remove {tag}: crmflow reads no YAML tags; quote a value to keep it as text",
            path,
        )

    def _node_path(self, parent: _Collection | None, is_key: bool, key: str) -> str:
        """The path of the node an event starts (a key: its own path, `key`)."""
        if parent is None:
            return ""
        if isinstance(parent.out, list):
            return join_path(parent.path, len(parent.out))
        if is_key:
            return join_path(parent.path, key)
        return join_path(parent.path, parent.key if isinstance(parent.key, str) else "<<")

    def _refuse(self, event: Event, message: str, hint: str, path: str | None = None) -> Any:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if path is None:
            path = self.stack[-1].path if self.stack else ""
        raise InvalidInputError(self.source, [Problem(path, message, hint, line, self.source)])


def _written_tag(tag: Any) -> tuple[str, bool]:
    """A tag as the document wrote it (`!name`, `!!str`, `!e!name`, `!<tag:...>`, `!`), and
    whether it is a local tag (`!name`): text that starts with `!` and was meant to be text."""
    handle, suffix = getattr(tag, "handle", None), getattr(tag, "suffix", None)
    if handle:
        return f"{handle}{suffix or ''}", handle == "!" and bool(suffix)
    if suffix == "!":
        return "!", False  # the non-specific tag
    return (f"!<{suffix}>" if suffix else str(tag)), False


def _tag_span(
    event: ScalarEvent | MappingStartEvent | SequenceStartEvent, tag: str
) -> tuple[int, int, int]:
    """The start and end of the line the tag is on, and where the tag starts (-1: not found).

    The node's start mark is its first property's, the anchor's in `&a !x value`, and ruamel
    moves it to the anchor in `!x &a value` too: the tag is looked for after the anchor, else
    before the mark on its line."""
    mark = event.start_mark
    buffer = getattr(mark, "buffer", None)
    if not isinstance(buffer, str):
        return 0, 0, -1
    index = min(mark.index, len(buffer))
    line_start = buffer.rfind("\n", 0, index) + 1
    line_end = buffer.find("\n", index)
    line_end = len(buffer) if line_end < 0 else line_end
    anchor = event.anchor
    if anchor and buffer.startswith(f"&{anchor}", index):
        after = index + 1 + len(anchor)
        found = buffer.find(tag, after, line_end)
        if found >= 0 and not buffer[after:found].strip():
            return line_start, line_end, found
    return line_start, line_end, buffer.rfind(tag, line_start, index + len(tag))


def _written_value(event: ScalarEvent, start: int, line_end: int) -> str:
    """The tagged scalar as written, from its tag to its end (or its line's end)."""
    buffer = getattr(event.start_mark, "buffer", None)
    if not isinstance(buffer, str) or start < 0:
        return f"{_written_tag(event.ctag)[0]} {event.value}".strip()
    end = event.end_mark.index if event.end_mark is not None else line_end
    return buffer[start : min(max(end, start), line_end)].strip()


def _example(parent: _Collection | None, is_key: bool, written: str) -> str:
    """`written` quoted where it stands: `key: "!x"`, `- "!x"`, `"!x": ...`."""
    if len(written) > _EXAMPLE_CHARS:
        written = written[:_EXAMPLE_CHARS].rstrip() + "..."
    quoted = '"' + written.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if parent is None:
        return quoted
    if isinstance(parent.out, list):
        return f"- {quoted}"
    if is_key:
        return f"{quoted}: ..."
    key = parent.key if isinstance(parent.key, str) else "<<"
    return f"{key}: {quoted}"


def _escaped(text: str) -> str:
    """`text` with each NUL and lone surrogate written as its escape, to show it in a path."""
    return _UNSTORABLE.sub(
        lambda m: "\\0" if m.group() == "\x00" else f"\\u{ord(m.group()):04x}", text
    )


def _quoted(text: str) -> str:
    return shown(f'"{_escaped(text)}"', quote=False)


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
