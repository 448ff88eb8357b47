"""Reading a flow document (YAML 1.2 or JSON text) into plain data and a map of line numbers.

ruamel.yaml keeps each key's position, so every problem found later can say on which line it is.
`12:30` stays a string and `on:` stays a key (YAML 1.2, not PyYAML's 1.1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "MAX_SOURCE_CHARS",
    "ParsedSource",
    "detect_format",
    "join_path",
    "parse_source",
    "plain_data",
]

MAX_SOURCE_CHARS = 2_000_000
Format = Literal["yaml", "json"]


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


def parse_source(text: str, *, source: str = "<input>", fmt: Format | None = None) -> ParsedSource:
    """Parse `text`; raises InvalidInputError (with the line) when it is not YAML / JSON."""
    if len(text) > MAX_SOURCE_CHARS:
        raise InvalidInputError(
            source,
            [Problem("", f"the document is larger than {MAX_SOURCE_CHARS} characters", "split it")],
        )
    fmt = fmt or detect_format(text)
    if fmt == "json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                source,
                [Problem("", f"not valid JSON: {exc.msg}", "check the syntax", exc.lineno, source)],
            ) from None
    loader = YAML(typ="rt", pure=True)
    loader.version = (1, 2)
    try:
        raw = loader.load(text)
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
    lines: dict[str, int] = {}
    try:
        data = _plain(raw, "", lines)
    except RecursionError:
        raise InvalidInputError(
            source, [Problem("", "the document is nested too deeply", source=source)]
        ) from None
    return ParsedSource(data=data, lines=lines, source=source)


def plain_data(data: Any) -> Any:
    """A deep copy of `data` with only JSON types, text keys and ISO dates."""
    return _plain(data, "", {})


def _yaml_hint(message: str) -> str:
    if "duplicate key" in message:
        return "each key may appear once in a mapping; remove or rename one"
    if "tab" in message or "\\t" in message:
        return "indent with spaces, not tabs"
    return "check the indentation and quote values containing ': ' or '#'"


def _plain(node: Any, path: str, lines: dict[str, int]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = key if isinstance(key, str) else _key_text(key)
            child = join_path(path, name)
            position = node.lc.key(key)
            if position is not None:
                lines[child] = position[0] + 1
            out[name] = _plain(value, child, lines)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            child = join_path(path, index)
            position = node.lc.item(index)
            if position is not None:
                lines[child] = position[0] + 1
            items.append(_plain(value, child, lines))
        return items
    if isinstance(node, Mapping):
        return {
            _key_text(k): _plain(v, join_path(path, _key_text(k)), lines) for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return [_plain(v, join_path(path, i), lines) for i, v in enumerate(node)]
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
