"""ruamel's YAML event stream, read by a scanner whose simple-key bookkeeping is linear."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.events import Event
from ruamel.yaml.scanner import Scanner, ScannerError

__all__ = ["LinearScanner", "events"]


def events(text: str) -> Iterator[Event]:
    loader = YAML(typ="safe", pure=True)
    loader.Scanner = LinearScanner
    yield from loader.parse(text)


class LinearScanner(Scanner):
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
