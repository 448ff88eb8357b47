"""Keyset paging: stable under concurrent inserts, cheap on large tables (no OFFSET scans)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["DEFAULT_PAGE_SIZE", "Page"]

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results ordered by id; pass `next_after` back as `after` for the next page."""

    items: list[T]
    next_after: int | None

    def as_dict(self, item: Callable[[T], Any]) -> dict[str, Any]:
        return {"items": [item(i) for i in self.items], "next_after": self.next_after}
