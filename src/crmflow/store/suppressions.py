"""The suppression list (`suppressions`) and the server's own signing keys (`signing_keys`):
the only module that writes them.

An address is kept normalised (stripped, lower case), once: adding one already there keeps
the first reason and time (the history already told why it stopped).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import signing_keys, suppressions

__all__ = [
    "Suppression",
    "add_suppression",
    "find_suppressions",
    "list_suppressions",
    "normalise_address",
    "remove_suppression",
    "signing_key",
]


@dataclass(frozen=True)
class Suppression:
    """An address no flow emails any more: why (unsubscribed | hard_bounce | admin), since
    when, and what caused it."""

    address: str
    reason: str
    at: datetime
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "source": self.source,
        }


def normalise_address(address: str) -> str:
    return address.strip().lower()


def _row(row: sa.Row[Any]) -> Suppression:
    return Suppression(row.address, row.reason, row.at, row.source)


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(suppressions)


def add_suppression(
    conn: sa.Connection, address: str, *, reason: str, at: datetime, source: str
) -> bool:
    """Put `address` on the list; False when it was there already (kept as it was)."""
    values = {"address": normalise_address(address), "reason": reason, "at": at, "source": source}
    insert = _insert(conn).values(values).on_conflict_do_nothing()
    return conn.execute(insert.returning(suppressions.c.address)).first() is not None


def remove_suppression(conn: sa.Connection, address: str) -> bool:
    """Take `address` off the list; whether it was on it."""
    query = suppressions.delete().where(suppressions.c.address == normalise_address(address))
    return conn.execute(query.returning(suppressions.c.address)).first() is not None


def find_suppressions(conn: sa.Connection, addresses: Collection[str]) -> dict[str, Suppression]:
    """Those of `addresses` on the list, by normalised address (one query)."""
    wanted = sorted({normalise_address(a) for a in addresses})
    if not wanted:
        return {}
    query = sa.select(suppressions).where(suppressions.c.address.in_(wanted))
    return {row.address: _row(row) for row in conn.execute(query)}


def list_suppressions(
    conn: sa.Connection, *, after: str | None = None, limit: int = 100
) -> list[Suppression]:
    """The list by address, `limit` at a time, those after `after`."""
    query = sa.select(suppressions).order_by(suppressions.c.address).limit(limit)
    if after is not None:
        query = query.where(suppressions.c.address > after)
    return [_row(row) for row in conn.execute(query)]


def signing_key(conn: sa.Connection, name: str, new_secret: str, *, at: datetime) -> str:
    """The kept secret called `name`; `new_secret` is kept (and returned) when there is none
    yet. Two servers making one at the same time both end with the first one written."""
    insert = _insert_key(conn).values(name=name, secret=new_secret, created_at=at)
    conn.execute(insert.on_conflict_do_nothing())
    query = sa.select(signing_keys.c.secret).where(signing_keys.c.name == name)
    return str(conn.execute(query).scalar_one())


def _insert_key(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(signing_keys)
