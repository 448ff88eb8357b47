"""Addresses read from an email's To, Cc, Bcc and From texts, as `email.utils.getaddresses`
reads them, kept for the texts seen last: the dispatcher reads a message's recipients several
times (its suppression check, its envelope, its unsubscribe link) and every message's sender is
often the same text; `getaddresses` costs some 5-10 us a text."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from email.utils import getaddresses

__all__ = ["addresses_in", "first_address"]

_KEPT = 4096  # lists of texts (a batch is 50 messages; a campaign's sender is one)


@functools.lru_cache(maxsize=_KEPT)
def _parsed(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(getaddresses(texts))


def addresses_in(texts: Iterable[object]) -> tuple[tuple[str, str], ...]:
    """(display name, address) of each address the texts hold, as `getaddresses` reads them
    (all the texts together)."""
    return _parsed(tuple(str(text) for text in texts))


def first_address(texts: Iterable[object]) -> str | None:
    """The first address the texts hold that is not empty, or None."""
    for _, address in addresses_in(texts):
        if address:
            return address
    return None
