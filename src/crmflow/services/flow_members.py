"""The members of a flow: who may see a private flow, added and removed by an admin, each change
recorded in the flow's history. `services.flows` re-exports `add_member` and `remove_member`.
"""

from __future__ import annotations

from crmflow.engine.definition import Visibility
from crmflow.engine.validation import flow_from_data
from crmflow.errors import ConflictError, NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow
from crmflow.services.flow_validation import validation_context
from crmflow.services.flow_views import (
    FlowView,
    get_flow,
    log_status_change,
    require_revision,
    views,
)
from crmflow.services.permissions import require_admin
from crmflow.services.preconditions import ExpectedVersion
from crmflow.services.users import user_ids_by_name
from crmflow.store import flows as flow_store
from crmflow.store.database import Connection, Row
from crmflow.store.flow_access import is_flow_member

__all__ = ["add_member", "remove_member"]


def _record_member_change(
    conn: Connection, ctx: Context, actor: Actor, flow: Row, note: str
) -> None:
    """A membership change is a new revision of the flow (If-Match sees it) and a line in its
    history; the status and version stay as they were."""
    flow_store.bump_revision(conn, flow.id)
    log_status_change(
        conn, ctx, actor, flow.id, flow.status, flow.status, flow.current_version, note
    )


def add_member(
    ctx: Context, actor: Actor, key: str, username: str, *, if_revision: ExpectedVersion = None
) -> FlowView:
    """Give `username` access to a (private) flow; recorded in the flow's history.
    PreconditionFailedError unless the flow is at `if_revision`, when given."""
    require_admin(actor, "change flow members")
    with ctx.engine.begin() as conn:
        row = visible_flow(conn, actor, key, for_update=True)
        require_revision(key, row.revision, if_revision)
        ids = user_ids_by_name(conn, {username})
        if username not in ids:
            raise NotFoundError(f"no user named {username!r} (see `crmflow users list`)")
        if not is_flow_member(conn, row.id, ids[username]):
            flow_store.add_member(conn, row.id, ids[username])
            _record_member_change(conn, ctx, actor, row, f"member added: {username}")
        [view] = views(conn, [flow_store.flow_by_id(conn, row.id)])
    return view


def remove_member(
    ctx: Context, actor: Actor, key: str, username: str, *, if_revision: ExpectedVersion = None
) -> FlowView:
    """Remove a member; refused when the flow's definition names them as responsible for a
    step (seed 003), because the flow would then assign work to someone who cannot see it.
    PreconditionFailedError unless the flow is at `if_revision`, when given."""
    require_admin(actor, "change flow members")
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    remaining = [m for m in flow.members if m != username]
    if flow.visibility is Visibility.PRIVATE:
        flow_from_data(
            {**flow.document, "members": remaining},
            context=validation_context(ctx, actor, excluding_flow=key),
            source=f"flow {key!r} without member {username!r}",
        )
    with ctx.engine.begin() as conn:
        row = visible_flow(conn, actor, key, for_update=True)
        require_revision(key, row.revision, if_revision)
        if row.revision != flow.revision:
            # The document checked above (outside this lock) is no longer the flow's: what it
            # said about who may be responsible could be out of date.
            raise ConflictError(
                f"flow {key!r} changed while removing {username!r} was checked; try again"
            )
        ids = user_ids_by_name(conn, {username})
        if username in ids:
            removed = flow_store.remove_member(conn, row.id, ids[username])
            if removed:
                _record_member_change(conn, ctx, actor, row, f"member removed: {username}")
        # Without the visibility check: removing yourself succeeded, and says so once more.
        [view] = views(conn, [flow_store.flow_by_id(conn, row.id)])
    return view
