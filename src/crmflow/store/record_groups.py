"""Lists of records ("record groups": a mailing list, "Donors 2026") and their members: the only
module that reads or writes `record_groups` and `record_group_members`.

Not the groups of users (`store.groups`): those are people who do tasks, these are records a
flow collects with its add_to_group / remove_from_group actions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import record_group_members, record_groups, records, users

__all__ = [
    "add_records",
    "find_record_group_id",
    "insert_record_group",
    "member_records_page",
    "record_group_ids",
    "record_groups_with_counts",
    "remove_records",
]


def insert_record_group(
    conn: sa.Connection, *, name: str, description: str, created_at: datetime
) -> int:
    """A new, empty list; its id. A name taken already raises the unique index's
    IntegrityError (`store.database.IntegrityError`)."""
    group_id = conn.execute(
        record_groups.insert()
        .values(name=name, description=description, created_at=created_at)
        .returning(record_groups.c.id)
    ).scalar_one()
    return int(group_id)


def record_groups_with_counts(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Every list (its `record_groups` columns) with its number of `members`, by name: one
    query."""
    counts = (
        sa.select(record_group_members.c.group_id, sa.func.count().label("n"))
        .group_by(record_group_members.c.group_id)
        .subquery()
    )
    query = (
        sa.select(record_groups, sa.func.coalesce(counts.c.n, 0).label("members"))
        .select_from(record_groups.outerjoin(counts, counts.c.group_id == record_groups.c.id))
        .order_by(record_groups.c.name)
    )
    return list(conn.execute(query).all())


def find_record_group_id(conn: sa.Connection, name: str) -> int | None:
    found = conn.execute(sa.select(record_groups.c.id).where(record_groups.c.name == name)).first()
    return None if found is None else int(found.id)


def record_group_ids(conn: sa.Connection, names: Collection[str]) -> dict[str, int]:
    """The ids of the lists named in `names` that exist, by name (one query)."""
    return {
        r.name: int(r.id)
        for r in conn.execute(
            sa.select(record_groups.c.id, record_groups.c.name).where(
                record_groups.c.name.in_(names)
            )
        )
    }


def member_records_page(
    conn: sa.Connection, name: str, *, after: int | None, limit: int
) -> list[sa.Row[Any]]:
    """Up to `limit` records of list `name` after record id `after`, by id: each row has the
    `records` columns and the owner's username as `owner` (None when the record has none)."""
    query = (
        sa.select(records, users.c.username.label("owner"))
        .select_from(
            record_group_members.join(records, records.c.id == record_group_members.c.record_id)
            .join(record_groups, record_groups.c.id == record_group_members.c.group_id)
            .outerjoin(users, users.c.id == records.c.owner_id)
        )
        .where(record_groups.c.name == name)
        .order_by(records.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(records.c.id > after)
    return list(conn.execute(query).all())


def add_records(
    conn: sa.Connection, joins: Sequence[tuple[int, int]], *, added_at: datetime
) -> None:
    """Each (list id, record id) of `joins` joins the list: one INSERT for them all. A record
    already in the list keeps its first `added_at` (when it joined, not when it re-joined)."""
    if not joins:
        return
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        record_group_members
    )
    conn.execute(
        insert.on_conflict_do_nothing(),
        [{"group_id": g, "record_id": r, "added_at": added_at} for g, r in joins],
    )


def remove_records(conn: sa.Connection, leaves: Sequence[tuple[int, int]]) -> None:
    """Each (list id, record id) of `leaves` leaves the list: one DELETE for them all."""
    if not leaves:
        return
    conn.execute(
        record_group_members.delete().where(
            sa.tuple_(record_group_members.c.group_id, record_group_members.c.record_id).in_(leaves)
        )
    )
