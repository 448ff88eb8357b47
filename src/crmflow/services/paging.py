"""Keyset paging: stable under concurrent inserts, cheap on large tables (no OFFSET scans).

Every list that pages (records, change events, saved queries and their previews, list members)
takes the page size the same way, through `page_size`: from 1 to the server's `page_size_max`
(1000 unless configured), and anything else is refused with the allowed range, from the CLI and
the API alike. A page is never silently shorter than asked: a client that reads fewer items than
its limit knows the list is at its end (and `next_after` is None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from crmflow.errors import InvalidInputError, Problem
from crmflow.services.context import Context

__all__ = ["DEFAULT_PAGE_SIZE", "Page", "keyset_page", "page_size"]

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50


class _Keyed(Protocol):
    @property
    def id(self) -> int: ...


K = TypeVar("K", bound=_Keyed)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results ordered by id; pass `next_after` back as `after` for the next page."""

    items: list[T]
    next_after: int | None

    def as_dict(self, item: Callable[[T], Any]) -> dict[str, Any]:
        return {"items": [item(i) for i in self.items], "next_after": self.next_after}


def page_size(ctx: Context, limit: int) -> int:
    """`limit`, when it is a page size this server serves (1 to `page_size_max`); otherwise
    InvalidInputError (HTTP 422) saying the range."""
    largest = ctx.settings.page_size_max
    if not 1 <= limit <= largest:
        raise InvalidInputError(
            "the page request",
            [
                Problem(
                    "limit",
                    f"must be between 1 and {largest}, got {limit}",
                    hint="page through longer lists with `after`",
                )
            ],
        )
    return limit


def keyset_page(items: Sequence[K], size: int) -> Page[K]:
    """The page of `items`, fetched in id order with a LIMIT of `size + 1`: the extra item, when
    there is one, only says that a next page exists."""
    shown = list(items[:size])
    return Page(shown, shown[-1].id if len(items) > size else None)
