"""Flows: create, read, edit (with versions), delete, and move through their lifecycle.

Every lifecycle change and every new version is written to `flow_status_changes` (who, when,
from, to). Private flows do not exist for non-members: they get NotFoundError, as for a flow that
does not exist, so that a private flow's name does not leak.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmflow.engine.definition import FlowDefinition, FlowStatus, Visibility
from crmflow.engine.lifecycle import EditMode, LifecycleAction, edit_mode, next_status
from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
from crmflow.errors import (
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Problem,
)
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow, visible_flows
from crmflow.services.permissions import require_admin
from crmflow.services.preconditions import ExpectedVersion, require_version
from crmflow.services.queries import matching_ids
from crmflow.services.record_types import catalog
from crmflow.services.users import user_ids_by_name
from crmflow.store.database import read_connection
from crmflow.store.enrollments import RUNNING
from crmflow.store.schema import (
    enrollments,
    flow_members,
    flow_status_changes,
    flow_versions,
    flows,
    groups,
    saved_queries,
    users,
)

__all__ = [
    "ConfirmationRequiredError",
    "FlowView",
    "StatusChange",
    "add_member",
    "change_status",
    "create_flow",
    "delete_flow",
    "flow_history",
    "get_flow",
    "get_flow_version",
    "list_flows",
    "remove_member",
    "start_list_count",
    "start_list_names",
    "start_list_size",
    "update_flow",
    "validate_flow_text",
    "validation_context",
]

SourceFormat = Literal["yaml", "json"]


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
            "start_at": _iso(self.start_at),
            "archive_at": _iso(self.archive_at),
            "started_at": _iso(self.started_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "records_inside": self.inside,
        }
        if self.document is not None:
            out["document"] = self.document
        return out


@dataclass(frozen=True)
class StatusChange:
    at: datetime
    actor: str | None
    from_status: str | None
    to_status: str
    version: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "from": self.from_status,
            "to": self.to_status,
            "version": self.version,
            "note": self.note,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- validation --------------------------------------------------------------------------------


def validation_context(
    ctx: Context, actor: Actor, *, excluding_flow: str | None = None
) -> ValidationContext:
    """What the validator may check names against: this organisation's types, users, groups,
    saved queries, and the other flows `actor` can see (a private flow's name must not leak
    through a "did you mean" to someone who cannot see it)."""
    with read_connection(ctx.engine) as conn:
        usernames = frozenset(conn.execute(sa.select(users.c.username)).scalars())
        group_names = frozenset(conn.execute(sa.select(groups.c.name)).scalars())
        queries = {
            r.name: r.record_type
            for r in conn.execute(sa.select(saved_queries.c.name, saved_queries.c.record_type))
        }
        other_flows = {
            r.key: r.record_type
            for r in conn.execute(
                sa.select(flows.c.key, flows.c.record_type).where(visible_flows(actor))
            )
            if r.key != excluding_flow
        }
    return ValidationContext(
        record_types=catalog(ctx),
        users=usernames,
        groups=group_names,
        queries=queries,
        flows=other_flows,
        allow_sql=ctx.settings.allow_sql_actions,
    )


def _parse(
    ctx: Context,
    actor: Actor,
    source_text: str,
    *,
    fmt: SourceFormat | None,
    source: str,
    excluding_flow: str | None = None,
) -> FlowDefinition:
    context = validation_context(ctx, actor, excluding_flow=excluding_flow)
    return parse_flow(
        source_text,
        context=context,
        source=source,
        fmt=fmt,
        max_chars=ctx.settings.max_document_chars,
    )


def validate_flow_text(
    ctx: Context,
    actor: Actor,
    text: str,
    *,
    fmt: SourceFormat | None = None,
    source: str = "<input>",
) -> FlowDefinition:
    """Validate without saving (raises InvalidInputError with every problem)."""
    return _parse(ctx, actor, text, fmt=fmt, source=source)


def _detect_format(text: str, fmt: SourceFormat | None) -> SourceFormat:
    if fmt:
        return fmt
    return "json" if text.lstrip().startswith("{") else "yaml"


# -- reading -----------------------------------------------------------------------------------


def _views(
    conn: sa.Connection, rows: list[sa.Row[Any]], *, with_document: bool = False
) -> list[FlowView]:
    """Views of many flows with a fixed number of queries (not a few per flow)."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    members: dict[int, list[str]] = {}
    for m in conn.execute(
        sa.select(flow_members.c.flow_id, users.c.username)
        .join(users, users.c.id == flow_members.c.user_id)
        .where(flow_members.c.flow_id.in_(ids))
        .order_by(users.c.username)
    ):
        members.setdefault(m.flow_id, []).append(m.username)
    owner_ids = {r.owner_id for r in rows if r.owner_id}
    owners: dict[int, str] = {
        r.id: r.username
        for r in conn.execute(
            sa.select(users.c.id, users.c.username).where(users.c.id.in_(owner_ids))
        )
    }
    inside: dict[int, int] = {
        r[0]: int(r[1])
        for r in conn.execute(
            sa.select(enrollments.c.flow_id, sa.func.count().label("count"))
            .where(enrollments.c.flow_id.in_(ids), enrollments.c.status.in_(RUNNING))
            .group_by(enrollments.c.flow_id)
        )
    }
    documents: dict[int, dict[str, Any]] = {}
    if with_document:
        for r in rows:
            documents[r.id] = conn.execute(
                sa.select(flow_versions.c.document).where(
                    flow_versions.c.flow_id == r.id, flow_versions.c.version == r.current_version
                )
            ).scalar_one()
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
        [view] = _views(conn, [visible_flow(conn, actor, key)], with_document=with_document)
    return view


def show_flow(ctx: Context, actor: Actor, key: str) -> FlowView:
    """The flow as `actor` may read it: its document without webhook secrets unless an admin."""
    view = get_flow(ctx, actor, key)
    if view.document is not None and not actor.is_admin:
        return replace(view, document=hide_secrets(view.document)[0])
    return view


HIDDEN_SECRET = "(hidden: only admins see a webhook secret)"


def hide_secrets(document: dict[str, Any], source: str = "") -> tuple[dict[str, Any], str]:
    """`document` and its `source` text without the secrets of its webhook triggers: anyone who
    may see a flow may read its document, but a secret lets its holder start the flow's records
    as the sender, so only admins (who may edit the flow) see it."""
    secrets: list[str] = []
    triggers: list[Any] = []
    for trigger in document.get("triggers") or ():
        if (
            isinstance(trigger, dict)
            and isinstance(trigger.get("secret"), str)
            and trigger["secret"]
        ):
            secrets.append(trigger["secret"])
            triggers.append({**trigger, "secret": HIDDEN_SECRET})
        else:
            triggers.append(trigger)
    if not secrets:
        return document, source
    for secret in sorted(secrets, key=len, reverse=True):
        source = source.replace(secret, HIDDEN_SECRET)
    return {**document, "triggers": triggers}, source


def list_flows(
    ctx: Context, actor: Actor, *, status: FlowStatus | None = None, record_type: str | None = None
) -> list[FlowView]:
    """The flows `actor` can see: every public flow, and private flows they own or belong to."""
    query = sa.select(flows).where(visible_flows(actor)).order_by(flows.c.key)
    if status is not None:
        query = query.where(flows.c.status == status.value)
    if record_type is not None:
        query = query.where(flows.c.record_type == record_type)
    with read_connection(ctx.engine) as conn:
        return _views(conn, list(conn.execute(query).all()))


def get_flow_version(ctx: Context, actor: Actor, key: str, version: int) -> dict[str, Any]:
    with read_connection(ctx.engine) as conn:
        row = visible_flow(conn, actor, key)
        found = conn.execute(
            sa.select(flow_versions).where(
                flow_versions.c.flow_id == row.id, flow_versions.c.version == version
            )
        ).first()
        if found is None:
            raise NotFoundError(
                f"flow {key!r} has no version {version} (it has 1 to {row.current_version})"
            )
        document, source = found.document, found.source
        if not actor.is_admin:
            document, source = hide_secrets(document, source)
        return {
            "key": key,
            "version": version,
            "document": document,
            "source": source,
            "source_format": found.source_format,
            "created_at": found.created_at.isoformat(),
        }


def flow_history(ctx: Context, actor: Actor, key: str) -> list[StatusChange]:
    with read_connection(ctx.engine) as conn:
        row = visible_flow(conn, actor, key)
        rows = conn.execute(
            sa.select(flow_status_changes, users.c.username)
            .outerjoin(users, users.c.id == flow_status_changes.c.actor_id)
            .where(flow_status_changes.c.flow_id == row.id)
            .order_by(flow_status_changes.c.id)
        ).all()
    return [
        StatusChange(r.at, r.username, r.from_status, r.to_status, r.version, r.note) for r in rows
    ]


# -- writing -----------------------------------------------------------------------------------


def _log(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    flow_id: int,
    from_status: str | None,
    to_status: str,
    version: int,
    note: str = "",
) -> None:
    conn.execute(
        flow_status_changes.insert().values(
            flow_id=flow_id,
            from_status=from_status,
            to_status=to_status,
            version=version,
            actor_id=actor.id,
            at=ctx.now(),
            note=note,
        )
    )


def _set_members(conn: sa.Connection, flow_id: int, usernames: list[str]) -> None:
    ids = user_ids_by_name(conn, set(usernames))
    conn.execute(flow_members.delete().where(flow_members.c.flow_id == flow_id))
    if ids:
        conn.execute(
            flow_members.insert(), [{"flow_id": flow_id, "user_id": i} for i in ids.values()]
        )


def _owner_id(conn: sa.Connection, definition: FlowDefinition, actor: Actor) -> int:
    if definition.owner is None:
        return actor.id
    return user_ids_by_name(conn, {definition.owner})[definition.owner]


def _stored_document(definition: FlowDefinition) -> dict[str, Any]:
    # Status and members live in their own columns/tables: they change without a new version.
    document = definition.to_document()
    document.pop("status", None)
    document.pop("members", None)
    return document


def _aware(value: datetime | None, definition: FlowDefinition, ctx: Context) -> datetime | None:
    """start_at / archive_at written without an offset are read in the flow's time zone (or,
    without one, the organisation's), as a person writing `2026-12-01T09:00` means."""
    if value is None or value.tzinfo is not None:
        return value
    zone = ZoneInfo(definition.timezone) if definition.timezone else ctx.zone
    return value.replace(tzinfo=zone)


def _check_start_list(
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


def create_flow(
    ctx: Context,
    actor: Actor,
    text: str,
    *,
    fmt: SourceFormat | None = None,
    source: str = "<input>",
    confirm_count: int | None = None,
) -> FlowView:
    """Create a flow from YAML or JSON text. It starts as a draft; a document that says
    `status: active` is started at once, and then its start-list count must be confirmed
    (checked before anything is written, so a refused start leaves nothing behind).
    The creator of a private flow is added to its members."""
    require_admin(actor, "create flows")
    definition = _parse(ctx, actor, text, fmt=fmt, source=source)
    requested = definition.status
    if requested not in (FlowStatus.DRAFT, FlowStatus.ACTIVE):
        raise InvalidInputError(
            f"flow {definition.key!r}",
            [
                Problem(
                    "status",
                    f"a new flow cannot begin as {requested.value}",
                    "leave status out (draft) or say active to start it at once",
                    source=source,
                )
            ],
        )
    note = ""
    if requested is FlowStatus.ACTIVE:
        count = _check_start_list(
            ctx, definition.key, definition.start_list_queries(), confirm_count
        )
        note = f"start list confirmed: {count} record(s)" if count is not None else ""
    now = ctx.now()
    members = definition.members
    if definition.visibility is Visibility.PRIVATE and actor.username not in members:
        # The admin who creates a private flow becomes a member, or it would vanish from them.
        members = [*members, actor.username]
    try:
        with ctx.engine.begin() as conn:
            flow_id = conn.execute(
                flows.insert().values(
                    key=definition.key,
                    name=definition.name,
                    record_type=definition.record_type,
                    status=requested.value,
                    current_version=1,
                    owner_id=_owner_id(conn, definition, actor),
                    visibility=definition.visibility.value,
                    start_at=_aware(definition.start_at, definition, ctx),
                    archive_at=_aware(definition.archive_at, definition, ctx),
                    started_at=now if requested is FlowStatus.ACTIVE else None,
                    created_by=actor.id,
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            conn.execute(
                flow_versions.insert().values(
                    flow_id=flow_id,
                    version=1,
                    document=_stored_document(definition),
                    source=text,
                    source_format=_detect_format(text, fmt),
                    created_by=actor.id,
                    created_at=now,
                )
            )
            _set_members(conn, flow_id, members)
            _log(conn, ctx, actor, flow_id, None, FlowStatus.DRAFT.value, 1, "created")
            if requested is FlowStatus.ACTIVE:
                _log(conn, ctx, actor, flow_id, "draft", requested.value, 1, note)
                from crmflow.services.triggers import enter_start_lists

                enter_start_lists(conn, ctx, flow_id, expected=count, now=now)
    except sa.exc.IntegrityError:
        raise ConflictError(
            f"a flow with key {definition.key!r} already exists; edit it with "
            f"`crmflow flows edit {definition.key} FILE` or choose another key"
        ) from None
    return get_flow(ctx, actor, definition.key)


def update_flow(
    ctx: Context,
    actor: Actor,
    key: str,
    text: str,
    *,
    fmt: SourceFormat | None = None,
    source: str = "<input>",
    if_revision: ExpectedVersion = None,
) -> FlowView:
    """Edit a flow: a draft is replaced in place; a paused or archived flow gets a new version
    (the old one is kept); an active or draining flow is locked. With `if_revision`,
    PreconditionFailedError unless the flow is at that revision."""
    require_admin(actor, "change flows")
    definition = _parse(ctx, actor, text, fmt=fmt, source=source, excluding_flow=key)
    with ctx.engine.begin() as conn:
        row = visible_flow(conn, actor, key, for_update=True)
        _require_revision(key, row.revision, if_revision)
        current = FlowStatus(row.status)
        mode = edit_mode(current)
        problems = []
        if definition.key != key:
            problems.append(
                Problem(
                    "key",
                    f"the document's key {definition.key!r} is not the flow being edited ({key!r})",
                    "keys cannot be changed; create a new flow for a new key",
                    source=source,
                )
            )
        if "status" in definition.model_fields_set and definition.status is not current:
            problems.append(
                Problem(
                    "status",
                    f"the flow is {current.value}; editing does not change the status",
                    f"leave status out, or use `crmflow flows <start|pause|resume|drain|archive> "
                    f"{key}`",
                    source=source,
                )
            )
        if definition.record_type != row.record_type and row.started_at is not None:
            problems.append(
                Problem(
                    "record_type",
                    f"a flow that has run keeps its record type ({row.record_type})",
                    "create a new flow for another record type",
                    source=source,
                )
            )
        if problems:
            raise InvalidInputError(f"flow {key!r}", problems)
        now = ctx.now()
        version = row.current_version if mode is EditMode.IN_PLACE else row.current_version + 1
        values = {
            "document": _stored_document(definition),
            "source": text,
            "source_format": _detect_format(text, fmt),
            "created_by": actor.id,
            "created_at": now,
        }
        if mode is EditMode.IN_PLACE:
            conn.execute(
                flow_versions.update()
                .where(flow_versions.c.flow_id == row.id, flow_versions.c.version == version)
                .values(**values)
            )
            note = "edited"
        else:
            conn.execute(flow_versions.insert().values(flow_id=row.id, version=version, **values))
            note = f"edited: version {version} created, version {row.current_version} kept"
        conn.execute(
            flows.update()
            .where(flows.c.id == row.id)
            .values(
                name=definition.name,
                record_type=definition.record_type,
                current_version=version,
                owner_id=_owner_id(conn, definition, actor),
                visibility=definition.visibility.value,
                start_at=_aware(definition.start_at, definition, ctx),
                archive_at=_aware(definition.archive_at, definition, ctx),
                updated_at=now,
                revision=flows.c.revision + 1,
            )
        )
        if "members" in definition.model_fields_set:
            _set_members(conn, row.id, definition.members)
        _log(conn, ctx, actor, row.id, current.value, current.value, version, note)
        # Built inside the transaction and without the visibility check: an edit that takes the
        # editor out of a private flow's members still succeeded and says so.
        [view] = _views(conn, [conn.execute(sa.select(flows).where(flows.c.id == row.id)).one()])
    return view


def delete_flow(
    ctx: Context, actor: Actor, key: str, *, if_revision: ExpectedVersion = None
) -> None:
    """Delete a flow that never ran. A flow that ever had records inside keeps its history and
    can only be archived. With `if_revision`, PreconditionFailedError unless the flow is at that
    revision."""
    require_admin(actor, "delete flows")
    with ctx.engine.begin() as conn:
        # Locked: a start of this flow waits for the delete, or the delete sees it started (the
        # enrollments table has no foreign key to flows; this rule is what keeps it whole).
        row = visible_flow(conn, actor, key, for_update=True)
        _require_revision(key, row.revision, if_revision)
        ever = conn.execute(
            sa.select(sa.func.count())
            .select_from(enrollments)
            .where(enrollments.c.flow_id == row.id)
        ).scalar_one()
        if ever or row.started_at is not None:
            detail = f"{ever} record(s) went through it" if ever else "it has been started"
            raise ConflictError(
                f"flow {key!r} cannot be deleted: {detail} and its history is kept; "
                f"archive it instead (`crmflow flows archive {key}`)"
            )
        conn.execute(flows.delete().where(flows.c.id == row.id))


def start_list_size(ctx: Context, names: list[str]) -> int:
    """How many distinct records the saved queries `names` select now (a record in two start
    lists enters once)."""
    with read_connection(ctx.engine) as conn:
        selects = [matching_ids(ctx, conn, name) for name in names]
        ids = (sa.union(*selects) if len(selects) > 1 else selects[0]).subquery()
        return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())


def start_list_names(document: Mapping[str, Any]) -> list[str]:
    """The saved queries a flow document starts from (its start_list triggers)."""
    return [
        str(t["query"]) for t in document.get("triggers") or () if t.get("type") == "start_list"
    ]


def start_list_count(ctx: Context, actor: Actor, key: str) -> int | None:
    """How many records the flow's start lists hold now (None when it has no start list)."""
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    names = start_list_names(flow.document)
    return start_list_size(ctx, names) if names else None


# Pausing freezes the records inside and archiving stops them where they are: both need the
# admin to say how many records that is (DESIGN: "cannot be deactivated or archived without
# saying how many are inside"). Draining lets them finish, so it needs no confirmation.
_STOPS_RECORDS = {
    LifecycleAction.PAUSE: "will be frozen at their step",
    LifecycleAction.ARCHIVE: "will stop where they are (or drain it so they finish first)",
}


def change_status(
    ctx: Context,
    actor: Actor,
    key: str,
    action: LifecycleAction,
    *,
    confirm_count: int | None = None,
    confirm_inside: int | None = None,
    note: str = "",
    moves: Mapping[str, str] | None = None,
    system: bool = False,
    if_revision: ExpectedVersion = None,
) -> FlowView:
    """Apply a lifecycle action (PreconditionFailedError unless the flow is at `if_revision`,
    when given).

    Starting a flow that has a start list needs `confirm_count` equal to the number of records
    the list holds now (ConfirmationRequiredError tells the number). Pausing or archiving a flow
    with records inside needs `confirm_inside` equal to that number. Resuming a flow edited while
    paused or archived takes `moves` ({removed step: new step or "end"}) for the records at
    steps the new version removed (see `services.lifecycle`). `system`: crmflow itself makes the
    change (start_at, archive_at, auto-archive), so the flow is found whatever its visibility.
    """
    require_admin(actor, f"{action.value} flows")
    flow = _any_flow(ctx, key) if system else get_flow(ctx, actor, key)
    assert flow.document is not None
    _require_revision(key, flow.revision, if_revision)
    current = flow.status
    target = next_status(current, action)
    if action is LifecycleAction.START:
        count = _check_start_list(ctx, key, start_list_names(flow.document), confirm_count)
        if count is not None:
            note = note or f"start list confirmed: {count} record(s)"
    if action in _STOPS_RECORDS and flow.inside and confirm_inside != flow.inside:
        raise ConfirmationRequiredError(
            f"{flow.inside} record(s) are inside {key!r} and {_STOPS_RECORDS[action]}; "
            f"confirm that number to {action.value}",
            count=flow.inside,
            confirm_with=f"crmflow flows {action.value} {key} --confirm {flow.inside}",
        )
    now = ctx.now()
    with ctx.engine.begin() as conn:
        # Compare-and-set on the status, so two admins cannot both apply a change from the same
        # status: the second one sees the new status and is refused with the reason.
        values: dict[str, Any] = {
            "status": target.value,
            "updated_at": now,
            "revision": flows.c.revision + 1,
        }
        if target is FlowStatus.ACTIVE and flow.started_at is None:
            values["started_at"] = now
        unchanged = [flows.c.id == flow.id, flows.c.status == current.value]
        if if_revision is not None:
            # The revision checked above was read before this transaction: set it only if so.
            unchanged.append(flows.c.revision == flow.revision)
        changed = conn.execute(flows.update().where(*unchanged).values(**values)).rowcount
        if changed != 1 and if_revision is not None:
            now_at = conn.execute(sa.select(flows.c.revision).where(flows.c.id == flow.id))
            _require_revision(key, now_at.scalar_one(), if_revision)
        if changed != 1:
            raise ConflictError(f"flow {key!r} changed status meanwhile; look again and retry")
        if action is LifecycleAction.START:
            # Imported here: the triggers service builds on this module. The start list enters
            # in this transaction: a start that fails leaves nobody inside.
            from crmflow.services.triggers import enter_start_lists

            enter_start_lists(conn, ctx, flow.id, expected=count, now=now)
        # Imported here: the lifecycle service builds on this module.
        from crmflow.services.lifecycle import on_status_change

        done = on_status_change(conn, ctx, actor, flow.id, current, target, now=now, moves=moves)
        note = "; ".join(n for n in (note, done) if n)
        _log(conn, ctx, actor, flow.id, current.value, target.value, flow.version, note)
    return _any_flow(ctx, key) if system else get_flow(ctx, actor, key)


def _require_revision(key: str, current: int, expected: ExpectedVersion) -> None:
    require_version(
        f"flow {key!r}",
        current,
        expected,
        read_again=f"GET /api/flows/{key} or `crmflow flows show {key}`",
        noun="revision",
    )


def _bump_revision(conn: sa.Connection, flow_id: int) -> None:
    conn.execute(flows.update().where(flows.c.id == flow_id).values(revision=flows.c.revision + 1))


def _any_flow(ctx: Context, key: str) -> FlowView:
    """A flow by key whoever may see it: for changes crmflow makes on its own."""
    with read_connection(ctx.engine) as conn:
        row = conn.execute(sa.select(flows).where(flows.c.key == key)).first()
        if row is None:
            raise NotFoundError(f"no flow with key {key!r}")
        [view] = _views(conn, [row], with_document=True)
        return view


def add_member(
    ctx: Context, actor: Actor, key: str, username: str, *, if_revision: ExpectedVersion = None
) -> FlowView:
    """Give `username` access to a (private) flow; recorded in the flow's history.
    PreconditionFailedError unless the flow is at `if_revision`, when given."""
    require_admin(actor, "change flow members")
    with ctx.engine.begin() as conn:
        row = visible_flow(conn, actor, key, for_update=True)
        _require_revision(key, row.revision, if_revision)
        ids = user_ids_by_name(conn, {username})
        if username not in ids:
            raise NotFoundError(f"no user named {username!r} (see `crmflow users list`)")
        present = conn.execute(
            sa.select(flow_members).where(
                flow_members.c.flow_id == row.id, flow_members.c.user_id == ids[username]
            )
        ).first()
        if present is None:
            conn.execute(flow_members.insert().values(flow_id=row.id, user_id=ids[username]))
            _bump_revision(conn, row.id)
            _log(
                conn,
                ctx,
                actor,
                row.id,
                row.status,
                row.status,
                row.current_version,
                f"member added: {username}",
            )
        [view] = _views(conn, [conn.execute(sa.select(flows).where(flows.c.id == row.id)).one()])
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
        _require_revision(key, row.revision, if_revision)
        ids = user_ids_by_name(conn, {username})
        if username in ids:
            removed = conn.execute(
                flow_members.delete().where(
                    flow_members.c.flow_id == row.id, flow_members.c.user_id == ids[username]
                )
            ).rowcount
            if removed:
                _bump_revision(conn, row.id)
                _log(
                    conn,
                    ctx,
                    actor,
                    row.id,
                    row.status,
                    row.status,
                    row.current_version,
                    f"member removed: {username}",
                )
        # Without the visibility check: removing yourself succeeded, and says so once more.
        [view] = _views(conn, [conn.execute(sa.select(flows).where(flows.c.id == row.id)).one()])
    return view


def flow_document(ctx: Context, actor: Actor, key: str) -> Mapping[str, Any]:
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    return flow.document
