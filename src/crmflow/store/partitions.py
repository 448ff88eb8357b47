"""PostgreSQL: the monthly partitions of the big history tables (migration 0030,
docs/retention.md). SQLite has none; every function here is for PostgreSQL only.

Each table of PARTITIONED is partitioned by RANGE on its time column: one partition a month
(`<table>_pYYYYMM`, from the first of the month 00:00 UTC to the next), and a default partition
(`<table>_pdefault`) that takes a row of a month with no partition yet, so that no insert ever
fails. `ensure_months` makes the current month's and the next ones' ahead of time (moving into
a new month's partition the rows the default one took for it); `drop_month` detaches and drops
a whole month once retention has counted what it held (store.retention, services.retention).

The partitions are not tables of `store.schema`: their parent is (`is_partition` tells them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

__all__ = [
    "AHEAD",
    "PARTITIONED",
    "Month",
    "drop_month",
    "ensure_months",
    "is_partition",
    "is_partitioned",
    "month_of",
    "month_start",
    "months",
    "rows_in",
]

# table -> the time column it is partitioned on
PARTITIONED = {
    "step_runs": "started_at",
    "record_changes": "at",
    "entry_decisions": "at",
    "notifications": "created_at",
}
AHEAD = 2  # months made ahead of the current one
_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?:(?P<year>\d{4})(?P<month>\d{2})|default)$")
# A partition made or dropped waits this long for the table's lock, then gives up (it is tried
# again at the next pass) rather than queue every writer behind a long reader.
_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Month:
    """A month's partition of `table`: rows with the time in [start, end)."""

    table: str
    name: str
    start: datetime
    end: datetime


def is_partition(name: str) -> bool:
    """Whether a table's name is one of a partitioned table's partitions."""
    found = _NAME.match(name)
    return found is not None and found.group("table") in PARTITIONED


def month_start(at: datetime, plus: int = 0) -> datetime:
    """The first instant (UTC) of `at`'s month, `plus` months later."""
    at = at.astimezone(UTC)
    index = at.year * 12 + at.month - 1 + plus
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _month(table: str, start: datetime) -> Month:
    return Month(table, f"{table}_p{start:%Y%m}", start, month_start(start, 1))


def is_partitioned(conn: sa.Connection, table: str) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    ).scalar()
    return kind == "p"


def months(conn: sa.Connection, table: str) -> list[Month]:
    """The month partitions of `table`, oldest first (not its default one)."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).scalars()
    out = []
    for name in names:
        found = _NAME.match(str(name))
        if found and found.group("year"):
            start = datetime(int(found.group("year")), int(found.group("month")), 1, tzinfo=UTC)
            out.append(_month(table, start))
    return sorted(out, key=lambda m: m.start)


def rows_in(conn: sa.Connection, name: str) -> int:
    """The rows a partition holds."""
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM {_quoted(name)}").scalar() or 0)


def _quoted(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a partition: {name!r}")
    return f'"{name}"'


def _create(conn: sa.Connection, month: Month) -> None:
    """Make `month`'s partition; the rows the default partition took for it move into it."""
    key = PARTITIONED[month.table]
    table, name, default = month.table, _quoted(month.name), _quoted(f"{month.table}_pdefault")
    bounds = {"lo": month.start, "hi": month.end}
    span = f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    taken = conn.execute(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {key} >= :lo AND {key} < :hi)"),
        bounds,
    ).scalar()
    if not taken:
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {table} {span}")
        return
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
    conn.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {default} WHERE {key} >= :lo AND {key} < :hi"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    conn.exec_driver_sql(f"ALTER TABLE {table} ATTACH PARTITION {name} {span}")


def ensure_months(conn: sa.Connection, now: datetime, *, ahead: int = AHEAD) -> list[str]:
    """Make the partitions of the month of `now` and of the `ahead` next ones that are missing,
    in every partitioned table (none on SQLite or before migration 0030); their names."""
    made: list[str] = []
    for table in PARTITIONED:
        if not is_partitioned(conn, table):
            continue
        have = {m.start for m in months(conn, table)}
        for plus in range(ahead + 1):
            start = month_start(now, plus)
            if start not in have:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
                month = _month(table, start)
                _create(conn, month)
                made.append(month.name)
    return made


def drop_month(conn: sa.Connection, month: Month) -> None:
    """Detach and drop a month's partition (its rows go with it)."""
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
    conn.exec_driver_sql(f"ALTER TABLE {month.table} DETACH PARTITION {_quoted(month.name)}")
    conn.exec_driver_sql(f"DROP TABLE {_quoted(month.name)}")


def month_of(table: str, start: datetime) -> Month:
    return _month(table, month_start(start))
