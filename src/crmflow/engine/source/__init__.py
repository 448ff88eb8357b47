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

Two things are refused because reading them would change the document or fail in the database:
an explicit tag (`name: !important Bang`, which YAML reads as the tag `!important` and the text
`Bang`: a value that starts with `!` must be quoted), and a key or value holding a NUL character
or a lone UTF-16 surrogate (an escape such as `"\\0"`), with the line, column and path.

The parts: `document` (the parsed document, its caps, paths), `scanner` (ruamel's event stream
with a linear scanner), `builder` (plain data built from the events while counting); this module
holds the public parse functions and re-exports every name callers import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crmflow.engine.source.builder import DocumentBuilder
from crmflow.engine.source.document import (
    MAX_DOCUMENT_CHARS,
    MAX_NESTING_DEPTH,
    MAX_NUMBER_CHARS,
    DocumentLimits,
    Format,
    ParsedSource,
    join_path,
    key_text,
    parent_path,
)
from crmflow.engine.source.scanner import events
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
    "parent_path",
    "parse_source",
    "plain_data",
]


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
    builder = DocumentBuilder(source, limits)
    try:
        data = builder.build(events(text))
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


# Private control flow, raised and caught in `_check_json_syntax`: not in errors.py.
class _NumberTooLongError(Exception):
    pass


def _yaml_hint(message: str) -> str:
    if "duplicate key" in message:
        return "each key may appear once in a mapping; remove or rename one"
    if "tab" in message or "\\t" in message:
        return "indent with spaces, not tabs"
    return "check the indentation and quote values containing ': ' or '#'"


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
        return {key_text(k): _plain(v, depth + 1, max_depth) for k, v in node.items()}
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
