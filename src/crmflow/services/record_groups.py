"""Static groups of records ("lists": a mailing list, "Donors 2026"), and the flow actions
`add_to_group` / `remove_from_group` that fill them.

They are called lists in the CLI (`crmflow lists ...`) and `record-groups` in the API so that they
are never mistaken for groups of users (`crmflow groups ...`), which decide who does a task.

A flow action never creates a list: a typo in a flow would otherwise quietly fill a new list
nobody reads. An unknown list fails the action with a message that says how to create it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from crmflow.engine.commands import AddToGroup, RemoveFromGroup
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.services.permissions import require_manager
from crmflow.services.records import RecordView, record_view
from crmflow.store import record_groups as stored
from crmflow.store.database import Connection, IntegrityError, read_connection

__all__ = [
    "GroupChange",
    "apply_group_changes",
    "create_record_group",
    "list_record_groups",
    "record_group_members_page",
]

GroupChange = AddToGroup | RemoveFromGroup
Fail = Callable[[Any, str], None]
NAME_MAX = 100


def _unknown(name: str) -> str:
    return (
        f"there is no list (record group) named {name!r}; create it with "
        f"`crmflow lists create {name}` or POST /api/record-groups"
    )


def create_record_group(
    ctx: Context, actor: Actor, name: str, description: str = ""
) -> dict[str, Any]:
    """A new, empty list of records (managers and admins)."""
    require_manager(actor, "create lists of records")
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInputError(
            "the list", [Problem("name", f"must be 1 to {NAME_MAX} characters, got {name!r}")]
        )
    now = ctx.now()
    try:
        with ctx.engine.begin() as conn:
            group_id = stored.insert_record_group(
                conn, name=name, description=description, created_at=now
            )
    except IntegrityError:
        raise ConflictError(f"a list named {name!r} already exists") from None
    return {
        "id": group_id,
        "name": name,
        "description": description,
        "members": 0,
        "created_at": now.isoformat(),
    }


def list_record_groups(ctx: Context) -> list[dict[str, Any]]:
    """Every list with its number of members, by name (one query)."""
    with read_connection(ctx.engine) as conn:
        rows = stored.record_groups_with_counts(conn)
    return [
        {
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "members": int(r.members),
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]


def record_group_members_page(
    ctx: Context, name: str, *, after: int | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[RecordView]:
    """The records in list `name`, by record id, `limit` at a time (keyset paging)."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        if stored.find_record_group_id(conn, name) is None:
            raise NotFoundError(_unknown(name))
        # One more than a page: keyset_page tells from it whether a next page exists.
        rows = stored.member_records_page(conn, name, after=after, limit=size + 1)
    return keyset_page([record_view(r) for r in rows], size)


def apply_group_changes(
    conn: Connection,
    changes: Sequence[tuple[GroupChange, int]],
    fail: Fail,
    *,
    now: datetime,
) -> None:
    """Carry out a batch's (command, record id) joins and leaves on the open transaction.

    Commands apply in order: when a batch both adds and removes the same record for the same
    list, the last one wins, as it would have one by one. Joining a list the record is already
    in, or leaving one it is not in, is done (nothing to change), not a failure. Set-based: one
    query for the lists, one INSERT (ON CONFLICT DO NOTHING) and one DELETE per batch.
    """
    if not changes:
        return
    ids = stored.record_group_ids(conn, sorted({c.group for c, _ in changes}))
    last: dict[tuple[int, int], bool] = {}  # (group, record) -> True: in the list at the end
    for command, record_id in changes:
        group_id = ids.get(command.group)
        if group_id is None:
            fail(command, _unknown(command.group))
            continue
        last[(group_id, record_id)] = isinstance(command, AddToGroup)
    stored.add_records(conn, [pair for pair, keep in last.items() if keep], added_at=now)
    stored.remove_records(conn, [pair for pair, keep in last.items() if not keep])
