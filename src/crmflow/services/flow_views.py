"""Flows as read, and what both their editing (`services.flows`) and their lifecycle
(`services.lifecycle`) check before they change one: the flow's view, its revision, and the
size of its start lists (confirmed by the person who starts it).

The lowest of the flow services: `flows` builds on `lifecycle`, which builds on this module and
on the triggers; none of them imports a module above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.definition import FlowStatus, Visibility
from crmflow.errors import ConfirmationRequiredError, NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow
from crmflow.services.preconditions import ExpectedVersion, require_version
from crmflow.services.triggers.start_lists import start_list_ids
from crmflow.store import flows as flow_store
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.enrollments import count_ids, inside_counts
from crmflow.store.flow_access import find_flow_by_key
from crmflow.store.users import usernames_by_id

__all__ = [
    "FlowView",
    "any_flow",
    "check_start_list",
    "get_flow",
    "iso",
    "log_status_change",
    "require_revision",
    "start_list_names",
    "start_list_size",
    "views",
]


@dataclass(frozen=True)
class FlowView:
    id: int
    key: str
    name: str
    record_type: str
    status: FlowStatus
    version: int
    owner: str | None
    visibility: Visibility
    members: tuple[str, ...]
    start_at: datetime | None
    archive_at: datetime | None
    started_at: datetime | None
    created_at: datetime
    updated_at: datetime
    inside: int  # records inside the flow now
    document: dict[str, Any] | None = None
    # One more on every change of the flow (edit, status, members): If-Match compares it.
    revision: int = 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "record_type": self.record_type,
            "status": self.status.value,
            "version": self.version,
            "revision": self.revision,
            "owner": self.owner,
            "visibility": self.visibility.value,
            "members": list(self.members),
            "start_at": iso(self.start_at),
            "archive_at": iso(self.archive_at),
            "started_at": iso(self.started_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "records_inside": self.inside,
        }
        if self.document is not None:
            out["document"] = self.document
        return out


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def views(conn: Connection, rows: Sequence[Row], *, with_document: bool = False) -> list[FlowView]:
    """Views of many flows (`flows` rows) with a fixed number of queries (not a few per flow)."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    members = flow_store.member_names(conn, ids)
    owners = usernames_by_id(conn, {r.owner_id for r in rows if r.owner_id})
    inside = inside_counts(conn, ids)
    documents: dict[int, dict[str, Any]] = {}
    if with_document:
        for r in rows:
            documents[r.id] = flow_store.version_document(conn, r.id, r.current_version)
    return [
        FlowView(
            id=row.id,
            key=row.key,
            name=row.name,
            record_type=row.record_type,
            status=FlowStatus(row.status),
            version=row.current_version,
            owner=owners.get(row.owner_id),
            visibility=Visibility(row.visibility),
            members=tuple(members.get(row.id, ())),
            start_at=row.start_at,
            archive_at=row.archive_at,
            started_at=row.started_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            inside=inside.get(row.id, 0),
            revision=row.revision,
            # Status and members are kept outside the versioned document; put them back so the
            # document reads as what the flow is now.
            document=(
                {**documents[row.id], "status": row.status, "members": members.get(row.id, [])}
                if with_document
                else None
            ),
        )
        for row in rows
    ]


def get_flow(ctx: Context, actor: Actor, key: str, *, with_document: bool = True) -> FlowView:
    with read_connection(ctx.engine) as conn:
        [view] = views(conn, [visible_flow(conn, actor, key)], with_document=with_document)
    return view


def any_flow(ctx: Context, key: str) -> FlowView:
    """A flow by key whoever may see it: for changes crmflow makes on its own."""
    with read_connection(ctx.engine) as conn:
        row = find_flow_by_key(conn, key)
        if row is None:
            raise NotFoundError(f"no flow with key {key!r}")
        [view] = views(conn, [row], with_document=True)
        return view


def require_revision(key: str, current: int, expected: ExpectedVersion) -> None:
    """PreconditionFailedError unless flow `key`, at revision `current`, is at `expected`
    (when given)."""
    require_version(
        f"flow {key!r}",
        current,
        expected,
        read_again=f"GET /api/flows/{key} or `crmflow flows show {key}`",
        noun="revision",
    )


def log_status_change(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    flow_id: int,
    from_status: str | None,
    to_status: str,
    version: int,
    note: str = "",
) -> None:
    """A line of the flow's history, by `actor`, now: a status change, an edit, a member."""
    flow_store.insert_status_change(
        conn,
        flow_id=flow_id,
        from_status=from_status,
        to_status=to_status,
        version=version,
        actor_id=actor.id,
        at=ctx.now(),
        note=note,
    )


def start_list_names(document: Mapping[str, Any]) -> list[str]:
    """The saved queries a flow document starts from (its start_list triggers)."""
    return [
        str(t["query"]) for t in document.get("triggers") or () if t.get("type") == "start_list"
    ]


def start_list_size(ctx: Context, names: list[str]) -> int:
    """How many distinct records the saved queries `names` select now (a record in two start
    lists enters once)."""
    with read_connection(ctx.engine) as conn:
        return count_ids(conn, start_list_ids(ctx, conn, names))


def check_start_list(
    ctx: Context, key: str, names: list[str], confirm_count: int | None
) -> int | None:
    """The start-list size, or ConfirmationRequiredError unless `confirm_count` matches it."""
    if not names:
        return None
    count = start_list_size(ctx, names)
    if confirm_count == count:
        return count
    if confirm_count is None:
        message = (
            f"starting {key!r} enters the {count} record(s) of its start list; "
            "confirm that number to start"
        )
    else:
        message = (
            f"the start list of {key!r} holds {count} record(s) now, not {confirm_count}; "
            f"check the list and confirm {count} to start"
        )
    raise ConfirmationRequiredError(
        message, count=count, confirm_with=f"crmflow flows start {key} --confirm {count}"
    )
