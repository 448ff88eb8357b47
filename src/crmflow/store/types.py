"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["ID", "JSONDoc", "UTCDateTime", "from_sqlite_text", "sqlite_text"]

# BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid alias) on SQLite.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# JSONB on PostgreSQL so that `data->>'field'` is cheap; JSON text on SQLite (json_extract).
JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as UTC on both backends.

    On SQLite the value is the naive UTC text SQLAlchemy's DATETIME writes
    (`2026-03-02 09:00:00.000000`, which sorts as it compares). The conversions are one function
    each way instead of SQLAlchemy's chain of processors and regular expression: a worker's batch
    converts several thousand date-times.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime(timezone=False))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a time zone first")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return from_sqlite_text
        return super().result_processor(dialect, coltype)


def sqlite_text(value: datetime | None) -> str | None:
    """An aware datetime as SQLite keeps it: naive UTC text with microseconds."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column; attach a time zone first")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


# A batch reads the same few instants many times over (its `now`, a flow's start): each text is
# converted once, and a repeat costs one C-level call (the result processor of every SQLite
# date-time column a batch reads: thousands).
@lru_cache(maxsize=4096)
def from_sqlite_text(value: str | datetime | None) -> datetime | None:
    """The aware UTC datetime of a SQLite date-time text (or of what SQLite computed)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
