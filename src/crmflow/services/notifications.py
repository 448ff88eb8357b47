"""The notifications inbox (docs/people.md, "Notifications inbox").

A user's inbox holds the notifications to them and to the groups they belong to (a flow's
`notify`, a task given to them, the loop guard, a delivery failure), newest first; those about
a private flow only while the user may see it (a member, its owner, an admin). Each is read
or unread for each user on their own: a notification to a group stays unread for the members
who have not read it (`notification_reads`, one row per user who read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.errors import NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.groups import group_names_by_user
from crmflow.store.notifications import (
    Reader,
    count_unread,
    find_notification,
    inbox,
    mark_read,
    unread_ids,
)

__all__ = [
    "UNREAD_COUNT_LIMIT",
    "NotificationView",
    "list_page",
    "read",
    "read_all",
    "unread_count",
]

# The unread badge counts this many at most (it says "999+" then): counting a user's tens of
# thousands of unread notifications on every page would cost more than it tells.
UNREAD_COUNT_LIMIT = 1000


@dataclass(frozen=True)
class NotificationView:
    id: int
    message: str
    to: str  # the username, or `group:<name>`
    record_id: int | None
    enrollment_id: int | None
    created_at: datetime
    read_at: datetime | None  # when this user read it; None: unread
    task_id: int | None = None  # the task it tells of (its page: /tasks/{id})

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message": self.message,
            "to": self.to,
            "record_id": self.record_id,
            "enrollment_id": self.enrollment_id,
            "created_at": self.created_at.isoformat(),
            "read": self.read_at is not None,
            "read_at": self.read_at.isoformat() if self.read_at else None,
            "task_id": self.task_id,
        }


def _view(row: Row) -> NotificationView:
    to = f"group:{row.target_ref}" if row.target_kind == "group" else str(row.target_ref)
    return NotificationView(
        row.id,
        row.message,
        to,
        row.record_id,
        row.enrollment_id,
        row.created_at,
        row.read_by_me_at,
        row.task_id,
    )


def _reader(conn: Connection, actor: Actor) -> Reader:
    groups = group_names_by_user(conn, [actor.id]).get(actor.id, [])
    return Reader(actor.id, actor.username, groups, sees_every_flow=actor.is_admin)


def list_page(
    ctx: Context,
    actor: Actor,
    *,
    unread: bool = False,
    after: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[NotificationView]:
    """`actor`'s inbox, newest first, `limit` at a time; `after`: the last id of the page
    before (the next page holds older ones). `unread`: only those `actor` has not read."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = inbox(
            conn, _reader(conn, actor), unread=unread, before=after or None, limit=size + 1
        )
    page = keyset_page(rows, size)
    return Page([_view(r) for r in page.items], page.next_after)


def read(ctx: Context, actor: Actor, notification_id: int) -> NotificationView:
    """Mark notification `notification_id` read for `actor` (read already: unchanged)."""
    with ctx.engine.begin() as conn:
        reader = _reader(conn, actor)
        if find_notification(conn, reader, notification_id) is None:
            raise NotFoundError(
                f"no notification {notification_id} in {actor.username}'s inbox "
                "(see `crmflow notifications list`)"
            )
        mark_read(conn, actor.id, [notification_id], at=ctx.now())
        row = find_notification(conn, reader, notification_id)
    assert row is not None
    return _view(row)


def read_all(ctx: Context, actor: Actor) -> int:
    """Mark every unread notification of `actor`'s inbox read; how many there were."""
    with ctx.engine.begin() as conn:
        ids = unread_ids(conn, _reader(conn, actor))
        mark_read(conn, actor.id, ids, at=ctx.now())
    return len(ids)


def unread_count(ctx: Context, actor: Actor, *, limit: int = UNREAD_COUNT_LIMIT) -> int:
    """How many notifications of `actor`'s inbox are unread (the web pages' badge), counted up
    to `limit`: `limit` means that many or more."""
    with read_connection(ctx.engine) as conn:
        return count_unread(conn, _reader(conn, actor), limit=limit)
