"""A parsed flow document (its plain data and the line of each path) and the caps every
document is read under. The lowest part of `crmflow.engine.source`: the builder and the public
parse functions both use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_NUMBER_CHARS",
    "DocumentLimits",
    "Format",
    "ParsedSource",
    "join_path",
    "key_text",
    "parent_path",
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


def key_text(key: Any) -> str:
    # YAML allows keys such as `true:` or `1:`; the flow document only has text keys.
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)
