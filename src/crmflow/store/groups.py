"""Groups of users (who does a task, who is a candidate owner) and their members: the only module
that reads or writes `groups` and `group_members`.

Not the lists of records (`record_groups`, `store.record_groups`): those are records a flow
collects, these are people.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from crmflow.store.schema import group_members, groups, users

__all__ = [
    "GroupRow",
    "MemberRow",
    "active_members_of_groups",
    "add_member",
    "all_groups",
    "find_group_id",
    "group_names_by_user",
    "insert_group",
    "member_usernames_by_group",
    "remove_member",
]


@dataclass(frozen=True)
class GroupRow:
    id: int
    name: str
    description: str


@dataclass(frozen=True)
class MemberRow:
    """An active member of a group, by the group's name."""

    group: str
    user_id: int
    username: str


def insert_group(conn: sa.Connection, *, name: str, description: str, created_at: datetime) -> int:
    """A new group; its id. A name taken already raises the unique index's IntegrityError
    (`store.database.IntegrityError`)."""
    return int(
        conn.execute(
            groups.insert().values(name=name, description=description, created_at=created_at)
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def find_group_id(conn: sa.Connection, name: str) -> int | None:
    gid = conn.execute(sa.select(groups.c.id).where(groups.c.name == name)).scalar()
    return None if gid is None else int(gid)


def all_groups(conn: sa.Connection) -> list[GroupRow]:
    """Every group, by name."""
    return [
        GroupRow(r.id, r.name, r.description)
        for r in conn.execute(sa.select(groups).order_by(groups.c.name))
    ]


def member_usernames_by_group(conn: sa.Connection) -> dict[int, list[str]]:
    """The usernames of every group's members (active or not), by username, by group id."""
    rows = conn.execute(
        sa.select(group_members.c.group_id, users.c.username)
        .join(users, users.c.id == group_members.c.user_id)
        .order_by(users.c.username)
    )
    by_group: dict[int, list[str]] = {}
    for m in rows:
        by_group.setdefault(m.group_id, []).append(m.username)
    return by_group


def group_names_by_user(conn: sa.Connection, user_ids: Collection[int]) -> dict[int, list[str]]:
    """The names of the groups each of `user_ids` belongs to, by name (one query)."""
    names: dict[int, list[str]] = {}
    for m in conn.execute(
        sa.select(group_members.c.user_id, groups.c.name)
        .join(groups, groups.c.id == group_members.c.group_id)
        .where(group_members.c.user_id.in_(user_ids))
        .order_by(groups.c.name)
    ):
        names.setdefault(m.user_id, []).append(m.name)
    return names


def active_members_of_groups(conn: sa.Connection, names: Collection[str]) -> list[MemberRow]:
    """The active members of the groups named in `names`, by username (one query)."""
    rows = conn.execute(
        sa.select(groups.c.name, users.c.id, users.c.username)
        .select_from(
            group_members.join(groups, groups.c.id == group_members.c.group_id).join(
                users, users.c.id == group_members.c.user_id
            )
        )
        .where(groups.c.name.in_(names), users.c.active)
        .order_by(users.c.username)
    )
    return [MemberRow(r.name, int(r.id), r.username) for r in rows]


def add_member(conn: sa.Connection, group_id: int, user_id: int) -> None:
    """`user_id` joins `group_id`; nothing changes when it is a member already."""
    present = conn.execute(
        sa.select(group_members).where(
            group_members.c.group_id == group_id, group_members.c.user_id == user_id
        )
    ).first()
    if present is None:
        conn.execute(group_members.insert().values(group_id=group_id, user_id=user_id))


def remove_member(conn: sa.Connection, group_id: int, user_id: int) -> None:
    """`user_id` leaves `group_id` (nothing to do when it was not a member)."""
    conn.execute(
        group_members.delete().where(
            group_members.c.group_id == group_id, group_members.c.user_id == user_id
        )
    )
