"""Flows: create, read, edit (with versions), delete, and move through their lifecycle.

Every lifecycle change and every new version is written to `flow_status_changes` (who, when,
from, to). Private flows do not exist for non-members: they get NotFoundError, as for a flow that
does not exist, so that a private flow's name does not leak.

The status changes themselves are `services.lifecycle`'s (`change_status`, re-exported here), and
the view of a flow `services.flow_views`': this module builds on both, neither imports it. So
does it on `services.flow_validation` (a document checked against this organisation's names) and
`services.flow_members` (a private flow's members), whose public names it re-exports.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.definition import FlowDefinition, FlowStatus, Visibility
from crmflow.engine.lifecycle import EditMode, edit_mode
from crmflow.errors import (
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Problem,
)
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow, visible_flows
from crmflow.services.flow_members import add_member, remove_member
from crmflow.services.flow_validation import (
    SourceFormat,
    check_flow_text,
    parse_flow_text,
    source_format,
    validate_flow_text,
    validation_context,
)
from crmflow.services.flow_views import (
    FlowView,
    check_start_list,
    get_flow,
    log_status_change,
    require_revision,
    start_list_names,
    start_list_size,
    views,
)
from crmflow.services.lifecycle import change_status
from crmflow.services.paging import DEFAULT_PAGE_SIZE, page_size
from crmflow.services.permissions import require_admin
from crmflow.services.preconditions import ExpectedVersion
from crmflow.services.triggers import enter_start_lists
from crmflow.services.users import user_ids_by_name
from crmflow.store import flows as flow_store
from crmflow.store.database import Connection, IntegrityError, read_connection
from crmflow.store.enrollments import enrollments_ever

__all__ = [
    "RESERVED_KEYS",
    "ConfirmationRequiredError",
    "FlowView",
    "FlowsPage",
    "StatusChange",
    "add_member",
    "change_status",
    "check_flow_text",
    "create_flow",
    "delete_flow",
    "flow_history",
    "flows_page",
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

# Paths of the web's flow pages (/flows/new, /flows/validate): a flow created with one of these
# keys could never be opened at /flows/<key>.
RESERVED_KEYS = ("new", "validate")


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


# -- reading -----------------------------------------------------------------------------------


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
    with read_connection(ctx.engine) as conn:
        rows = flow_store.flows_seen(
            conn,
            visible_flows(actor),
            status=status.value if status is not None else None,
            record_type=record_type,
        )
        return views(conn, rows)


@dataclass(frozen=True)
class FlowsPage:
    """A page of flows by key; pass `next_after` back as `after` for the next one."""

    items: list[FlowView]
    next_after: str | None


def flows_page(
    ctx: Context,
    actor: Actor,
    *,
    statuses: Collection[FlowStatus] | None = None,
    after: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> FlowsPage:
    """The flows `actor` can see (as `list_flows`), `limit` at a time by key, after the key
    `after`; only those in one of `statuses` when given."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = flow_store.flows_seen(
            conn,
            visible_flows(actor),
            status=None,
            record_type=None,
            statuses=[s.value for s in statuses] if statuses is not None else None,
            after_key=after,
            limit=size + 1,
        )
        shown = views(conn, rows[:size])
    return FlowsPage(shown, shown[-1].key if len(rows) > size else None)


def get_flow_version(ctx: Context, actor: Actor, key: str, version: int) -> dict[str, Any]:
    with read_connection(ctx.engine) as conn:
        row = visible_flow(conn, actor, key)
        found = flow_store.find_version(conn, row.id, version)
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
        rows = flow_store.status_changes(conn, row.id)
    return [
        StatusChange(r.at, r.username, r.from_status, r.to_status, r.version, r.note) for r in rows
    ]


# -- writing -----------------------------------------------------------------------------------


def _set_members(conn: Connection, flow_id: int, usernames: list[str]) -> None:
    flow_store.set_members(conn, flow_id, user_ids_by_name(conn, set(usernames)).values())


def _owner_id(conn: Connection, definition: FlowDefinition, actor: Actor) -> int:
    if definition.owner is None:
        return actor.id
    return user_ids_by_name(conn, {definition.owner})[definition.owner]


def _stored_document(definition: FlowDefinition) -> dict[str, Any]:
    # Status and members live in their own columns/tables: they change without a new version.
    document = definition.to_document()
    document.pop("status", None)
    document.pop("members", None)
    return document


def _flow_fields(
    conn: Connection, definition: FlowDefinition, actor: Actor, ctx: Context
) -> flow_store.FlowFields:
    """What `definition` sets of its flow's row."""
    return flow_store.FlowFields(
        name=definition.name,
        record_type=definition.record_type,
        owner_id=_owner_id(conn, definition, actor),
        visibility=definition.visibility.value,
        start_at=_aware(definition.start_at, definition, ctx),
        archive_at=_aware(definition.archive_at, definition, ctx),
    )


def _version_fields(
    definition: FlowDefinition, text: str, fmt: SourceFormat | None, actor: Actor, now: datetime
) -> flow_store.VersionFields:
    """The version `definition`, written as `text`, makes."""
    return flow_store.VersionFields(
        document=_stored_document(definition),
        source=text,
        source_format=source_format(text, fmt),
        created_by=actor.id,
        created_at=now,
    )


def _aware(value: datetime | None, definition: FlowDefinition, ctx: Context) -> datetime | None:
    """start_at / archive_at written without an offset are read in the flow's time zone (or,
    without one, the organisation's), as a person writing `2026-12-01T09:00` means."""
    if value is None or value.tzinfo is not None:
        return value
    zone = ZoneInfo(definition.timezone) if definition.timezone else ctx.zone
    return value.replace(tzinfo=zone)


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
    definition = parse_flow_text(ctx, actor, text, fmt=fmt, source=source)
    if definition.key in RESERVED_KEYS:
        raise InvalidInputError(
            f"flow {definition.key!r}",
            [
                Problem(
                    "key",
                    f"{definition.key!r} is reserved (the web pages use /flows/{definition.key})",
                    f"choose another key, e.g. {definition.key}-flow; reserved: "
                    + ", ".join(RESERVED_KEYS),
                    source=source,
                )
            ],
        )
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
        count = check_start_list(
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
            flow_id = flow_store.insert_flow(
                conn,
                definition.key,
                _flow_fields(conn, definition, actor, ctx),
                status=requested.value,
                started_at=now if requested is FlowStatus.ACTIVE else None,
                created_by=actor.id,
                now=now,
            )
            flow_store.insert_version(
                conn, flow_id, 1, _version_fields(definition, text, fmt, actor, now)
            )
            _set_members(conn, flow_id, members)
            log_status_change(conn, ctx, actor, flow_id, None, FlowStatus.DRAFT.value, 1, "created")
            if requested is FlowStatus.ACTIVE:
                log_status_change(conn, ctx, actor, flow_id, "draft", requested.value, 1, note)
                enter_start_lists(conn, ctx, flow_id, expected=count, now=now)
    except IntegrityError:
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
    definition = parse_flow_text(ctx, actor, text, fmt=fmt, source=source, excluding_flow=key)
    with ctx.engine.begin() as conn:
        row = visible_flow(conn, actor, key, for_update=True)
        require_revision(key, row.revision, if_revision)
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
        fields = _version_fields(definition, text, fmt, actor, now)
        if mode is EditMode.IN_PLACE:
            flow_store.replace_version(conn, row.id, version, fields)
            note = "edited"
        else:
            flow_store.insert_version(conn, row.id, version, fields)
            note = f"edited: version {version} created, version {row.current_version} kept"
        flow_store.update_flow(
            conn,
            row.id,
            _flow_fields(conn, definition, actor, ctx),
            current_version=version,
            now=now,
        )
        if "members" in definition.model_fields_set:
            _set_members(conn, row.id, definition.members)
        log_status_change(conn, ctx, actor, row.id, current.value, current.value, version, note)
        # Built inside the transaction and without the visibility check: an edit that takes the
        # editor out of a private flow's members still succeeded and says so.
        [view] = views(conn, [flow_store.flow_by_id(conn, row.id)])
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
        require_revision(key, row.revision, if_revision)
        ever = enrollments_ever(conn, row.id)
        if ever or row.started_at is not None:
            detail = f"{ever} record(s) went through it" if ever else "it has been started"
            raise ConflictError(
                f"flow {key!r} cannot be deleted: {detail} and its history is kept; "
                f"archive it instead (`crmflow flows archive {key}`)"
            )
        flow_store.delete_flow(conn, row.id)


def start_list_count(ctx: Context, actor: Actor, key: str) -> int | None:
    """How many records the flow's start lists hold now (None when it has no start list)."""
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    names = start_list_names(flow.document)
    return start_list_size(ctx, names) if names else None


def flow_document(ctx: Context, actor: Actor, key: str) -> Mapping[str, Any]:
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    return flow.document
