"""The notifications inbox (`services.notifications`): a user's notifications (to them, or to a
group they belong to), each read or unread for that user alone, and the marks that they read
them. Writes `notification_reads` only; `store.tasks` writes `notifications`.

A notification about a run of a private flow is in the inbox only while its reader may see
that flow (a member, its owner, or an admin), read at the time of reading as the task lists
are: a user taken off the flow no longer sees what it told them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.flow_access import flows_visible_to
from crmflow.store.schema import enrollments, flows, notification_reads, notifications

__all__ = [
    "Reader",
    "count_unread",
    "find_notification",
    "forget_reads",
    "inbox",
    "mark_read",
    "unread_ids",
]


@dataclass(frozen=True)
class Reader:
    """Whose inbox: the user's id and username, the names of the groups they belong to, and
    whether they see every flow (an admin) or only those `flows_visible_to` them."""

    user_id: int
    username: str
    groups: Collection[str] = ()
    sees_every_flow: bool = False

    def targets(self) -> sa.ColumnElement[bool]:
        n = notifications.c
        mine = sa.and_(n.target_kind == "user", n.target_ref == self.username)
        if self.groups:
            theirs = sa.and_(n.target_kind == "group", n.target_ref.in_(list(self.groups)))
            mine = sa.or_(mine, theirs)
        if self.sees_every_flow:
            return mine
        # Not about a run of a flow this reader may not see (a notification about no run, or
        # about a run that is gone, stays).
        hidden = sa.exists().where(
            enrollments.c.id == n.enrollment_id,
            flows.c.id == enrollments.c.flow_id,
            sa.not_(flows_visible_to(self.user_id)),
        )
        return sa.and_(mine, sa.not_(hidden))


def _select(reader: Reader, *columns: Any) -> sa.Select[Any]:
    """`columns` (every one of a notification and `read_by_me_at` by default) of `reader`'s
    inbox."""
    read = notification_reads
    joined = notifications.outerjoin(
        read,
        sa.and_(read.c.notification_id == notifications.c.id, read.c.user_id == reader.user_id),
    )
    chosen = columns or (notifications, read.c.read_at.label("read_by_me_at"))
    return sa.select(*chosen).select_from(joined).where(reader.targets())


def inbox(
    conn: sa.Connection, reader: Reader, *, unread: bool, before: int | None, limit: int
) -> list[sa.Row[Any]]:
    """`reader`'s notifications, newest first (ids below `before`), at most `limit`; each row
    has `.read_by_me_at` (None: unread for this reader). `unread`: only the unread ones."""
    query = _select(reader)
    if unread:
        query = query.where(notification_reads.c.read_at.is_(None))
    if before is not None:
        query = query.where(notifications.c.id < before)
    return list(conn.execute(query.order_by(notifications.c.id.desc()).limit(limit)))


def find_notification(
    conn: sa.Connection, reader: Reader, notification_id: int
) -> sa.Row[Any] | None:
    """Notification `notification_id` when it is in `reader`'s inbox (as in `inbox`), else None."""
    query = _select(reader).where(notifications.c.id == notification_id)
    return conn.execute(query).first()


def unread_ids(conn: sa.Connection, reader: Reader) -> list[int]:
    """The ids of the notifications unread in `reader`'s inbox."""
    query = _select(reader).where(notification_reads.c.read_at.is_(None))
    return [r.id for r in conn.execute(query)]


def count_unread(conn: sa.Connection, reader: Reader, *, limit: int) -> int:
    """How many notifications are unread in `reader`'s inbox (the same ones as `inbox`), counted
    in the database and only up to `limit`: a badge needs no exact count of thousands."""
    unread = (
        _select(reader, notifications.c.id)
        .where(notification_reads.c.read_at.is_(None))
        .limit(limit)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(unread)).scalar_one())


def mark_read(conn: sa.Connection, user_id: int, ids: Collection[int], *, at: datetime) -> None:
    """Notifications `ids` are read by user `user_id` (at `at`; one read before keeps its time)."""
    if not ids:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(notification_reads).on_conflict_do_nothing()
    conn.execute(
        statement, [{"notification_id": i, "user_id": user_id, "read_at": at} for i in ids]
    )


def forget_reads(conn: sa.Connection, notification_ids: Sequence[int]) -> None:
    """Delete who read the notifications `notification_ids` (pruning, before they go)."""
    if notification_ids:
        r = notification_reads.c
        conn.execute(notification_reads.delete().where(r.notification_id.in_(notification_ids)))
