"""The lifecycle of a flow: its status changes (`change_status`, by the rules of
`engine.lifecycle`), what they do to the records inside it (seed 000), and the flow's own
schedule (`start_at`, `archive_at`).

- A status change is a compare-and-set on the flow's status, written in the flow's history with
  what it did. Starting a flow with a start list needs its count confirmed, and the list enters
  in the same transaction; pausing or archiving a flow with records inside needs their number.

- Pausing or archiving freezes the records where they are (the worker only moves records of
  active or draining flows) and notes when, `flows.paused_at`, and how far the change feed had
  read then, `flows.paused_feed_position`: the changes after it are what the flow did not hear.
- Leaving a frozen status (paused or archived -> active or draining) thaws them
  (`services.thaw`). A frozen flow
  hears no record change, so first each record changed during the freeze is looked at again as
  it is now, through the engine's `resume_recheck` (its changes told as one): deleted or goal met,
  it leaves; a wait whose condition now holds or whose field changed goes on; a step waiting for
  a record's date has its time recomputed from the date as it is now (never the old, earlier
  one). Then the current version's catch-up policy decides what happens to the time that
  passed: run_late changes nothing (whatever fell due runs at once); skip_missed moves a missed
  daily time to its next occurrence after the resume; shift_delays moves every pending delay,
  timeout and deadline by the length of the freeze (a time set by a date of the record stays).
  An archive is a freeze like a pause: resuming an archived flow continues each record where it
  was, under the same rules. Records that had finished are not inside, so nothing touches them.
- A flow edited while frozen has a new version; thawing moves every record inside to it by step
  key (the rules: `engine.version_move`). A record whose step is unchanged (or only its actions
  changed) stays as it is, due time kept; one whose step changed its type or timing starts that
  step again at the resume; one whose step is gone goes where the person resuming says (`moves`:
  a step of the new version, or "end"), and the resume is refused until every removed step with
  records has a choice.
- A draining flow whose last record has left is archived by the system user when its definition
  says `auto_archive_when_drained: true`.
- `start_at` starts a draft and `archive_at` archives a flow, each once, at or after its instant,
  through `change_status` as the system user.

Thawing runs in the status change's own transaction (so a refused resume changes nothing), over
the records that can change only, in chunks of enrollments loaded, computed and written in bulk.

Imports run one way: `services.flows` builds on this module, which builds on `services.thaw`,
`services.flow_views` and `services.triggers`; none of those imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction, next_status
from crmflow.engine.version_move import END, StepImpact
from crmflow.errors import (
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    MovesRequiredError,
    NotFoundError,
    Problem,
)
from crmflow.services.context import Actor, Context
from crmflow.services.flow_views import (
    FlowView,
    any_flow,
    check_start_list,
    get_flow,
    log_status_change,
    require_revision,
    start_list_names,
    start_list_size,
)
from crmflow.services.permissions import require_admin
from crmflow.services.preconditions import ExpectedVersion
from crmflow.services.thaw import impact_preview, thaw
from crmflow.services.triggers import enter_start_lists
from crmflow.services.users import ensure_system_user
from crmflow.store import flows as flow_store
from crmflow.store.database import Connection, read_connection
from crmflow.store.enrollments import inside_counts
from crmflow.store.feed import lock_feed_position

__all__ = [
    "END",
    "MovesRequiredError",
    "ScheduleResult",
    "StepImpact",
    "archive_drained_flows",
    "change_status",
    "fire_lifecycle_schedule",
    "impact_preview",
    "on_status_change",
]

log = logging.getLogger("crmflow.lifecycle")

_FROZEN = (FlowStatus.PAUSED, FlowStatus.ARCHIVED)
_RUNNING = (FlowStatus.ACTIVE, FlowStatus.DRAINING)


# -- the status change ---------------------------------------------------------------------------

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
    in_transaction: Callable[[Connection], None] | None = None,
) -> FlowView:
    """Apply a lifecycle action (PreconditionFailedError unless the flow is at `if_revision`,
    when given).

    Starting a flow that has a start list needs `confirm_count` equal to the number of records
    the list holds now (ConfirmationRequiredError tells the number). Pausing or archiving a flow
    with records inside needs `confirm_inside` equal to that number. Resuming a flow edited while
    paused or archived takes `moves` ({removed step: new step or "end"}) for the records at
    steps the new version removed (see `on_status_change`). `system`: crmflow itself makes the
    change (start_at, archive_at, auto-archive), so the flow is found whatever its visibility.
    `in_transaction(conn)` is called last in the change's transaction (a background job marks
    itself done there: services.jobs).
    """
    require_admin(actor, f"{action.value} flows")
    flow = any_flow(ctx, key) if system else get_flow(ctx, actor, key)
    assert flow.document is not None
    require_revision(key, flow.revision, if_revision)
    current = flow.status
    target = next_status(current, action, started=flow.started_at is not None)
    if action is LifecycleAction.START:
        count = check_start_list(ctx, key, start_list_names(flow.document), confirm_count)
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
        # status: the second one sees the new status and is refused with the reason. The
        # revision checked above was read before this transaction: set it only if so.
        changed = flow_store.set_status(
            conn,
            flow.id,
            from_status=current.value,
            to_status=target.value,
            now=now,
            started=target is FlowStatus.ACTIVE and flow.started_at is None,
            revision=flow.revision if if_revision is not None else None,
        )
        if not changed and if_revision is not None:
            require_revision(key, flow_store.flow_revision(conn, flow.id), if_revision)
        if not changed:
            raise ConflictError(f"flow {key!r} changed status meanwhile; look again and retry")
        if action is LifecycleAction.START:
            # The start list enters in this transaction: a start that fails leaves nobody inside.
            enter_start_lists(conn, ctx, flow.id, expected=count, now=now)
        done = on_status_change(
            conn,
            ctx,
            actor,
            flow.id,
            current,
            target,
            now=now,
            moves=moves,
            had_started=flow.started_at is not None,
        )
        note = "; ".join(n for n in (note, done) if n)
        log_status_change(
            conn, ctx, actor, flow.id, current.value, target.value, flow.version, note
        )
        if in_transaction is not None:
            in_transaction(conn)
    return any_flow(ctx, key) if system else get_flow(ctx, actor, key)


def on_status_change(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    flow_id: int,
    current: FlowStatus,
    target: FlowStatus,
    *,
    now: datetime,
    moves: Mapping[str, str] | None = None,
    had_started: bool = True,
) -> str:
    """Called by `change_status` on its transaction, after the status changed: freeze or
    thaw the records inside. Returns what it did, for the flow's history (may be empty).
    `had_started`: the flow had been active before this change (one archived as a draft that
    starts now has nobody frozen inside: its start list has just entered).

    Raises MovesRequiredError (nothing is changed) when thawing would strand records at steps
    the new version removed and `moves` does not say where they go.
    """
    moves = dict(moves or {})
    flow = flow_store.flow_by_id(conn, flow_id)
    if target in _FROZEN and current in _RUNNING:
        # Frozen from now; a paused flow that is archived stays frozen since its pause. What the
        # feed passes from here on the flow does not hear (see `_unheard`).
        position = lock_feed_position(conn, now)
        flow_store.set_paused(conn, flow_id, paused_at=now, position=position)
    if target in _RUNNING and current in _FROZEN and had_started:
        note = thaw(conn, ctx, actor, flow, now=now, moves=moves)
        flow_store.set_paused(conn, flow_id, paused_at=None, position=None)
        return note
    if moves:
        raise InvalidInputError(
            f"the moves for flow {flow.key!r}",
            [
                Problem(
                    "moves",
                    f"records move to a new version only when a paused or archived flow "
                    f"resumes; this change goes from {current.value} to {target.value}",
                    "leave the moves out",
                )
            ],
        )
    return ""


# -- the flow's own schedule ----------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    started: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    next_at: datetime | None = None  # the next start_at / archive_at still to come


def _change(
    ctx: Context,
    system: Actor,
    key: str,
    action: LifecycleAction,
    note: str,
    *,
    confirm_count: int | None = None,
    confirm_inside: int | None = None,
) -> bool:
    try:
        change_status(
            ctx,
            system,
            key,
            action,
            note=note,
            system=True,
            confirm_count=confirm_count,
            confirm_inside=confirm_inside,
        )
    except (ConflictError, NotFoundError, InvalidInputError) as exc:
        # Changed meanwhile (a person was quicker, a count moved): looked at again next round.
        log.warning("flow %s: %s not done (%s); trying again later", key, action.value, exc)
        return False
    return True


def fire_lifecycle_schedule(ctx: Context, *, now: datetime) -> ScheduleResult:
    """Start the drafts whose `start_at` has come and archive the flows whose `archive_at` has
    come, as the system user, through the normal lifecycle path (history note "start_at
    reached" / "archive_at reached"). Never before the instant; once: a started flow is no
    longer a draft, and an archive_at is done once the flow was archived at or after it.

    A flow with a start list cannot have its count confirmed by a person at that moment: the
    list is counted when start_at comes, that count is what enters, and it is written in the
    history note ("start_at reached; start list counted then: 120 record(s)"). Archiving at
    archive_at stops the records inside where they are; their number is in the note.
    """
    result = ScheduleResult()
    with read_connection(ctx.engine) as conn:
        to_start = flow_store.drafts_due(conn, now)
        documents = flow_store.current_documents_of(conn, [r.id for r in to_start])
    # Only when there is something to do: looking for the system user is a write transaction.
    system = ensure_system_user(ctx) if to_start else None
    for row in to_start:
        assert system is not None
        names = start_list_names(documents[row.id])
        count = start_list_size(ctx, names) if names else None
        note = "start_at reached"
        if count is not None:
            note += f"; start list counted then: {count} record(s)"
        if _change(ctx, system, row.key, LifecycleAction.START, note, confirm_count=count):
            result.started.append(row.key)
    with read_connection(ctx.engine) as conn:
        to_archive = flow_store.archives_due(conn, now)
        inside = inside_counts(conn, [r.id for r in to_archive]) if to_archive else {}
    system = system or (ensure_system_user(ctx) if to_archive else None)
    for due in to_archive:
        assert system is not None
        count = inside.get(due.id, 0)
        note = "archive_at reached"
        if count:
            note += f"; {count} record(s) inside stopped where they were"
        if _change(ctx, system, due.key, LifecycleAction.ARCHIVE, note, confirm_inside=count):
            result.archived.append(due.key)
    return ScheduleResult(result.started, result.archived, _next_scheduled(ctx))


def _next_scheduled(ctx: Context) -> datetime | None:
    """The earliest start_at or archive_at still to fire (a worker sleeps no longer than that)."""
    with read_connection(ctx.engine) as conn:
        start, archive = flow_store.next_scheduled(conn)
    found = [t for t in (start, archive) if t is not None]
    return min(found) if found else None


def archive_drained_flows(ctx: Context) -> list[str]:
    """Archive, as the system user, every draining flow with nobody left inside whose
    definition says `auto_archive_when_drained: true`. Returns their keys."""
    with read_connection(ctx.engine) as conn:
        drained = flow_store.drained_flows(conn)
    archived: list[str] = []
    wanted = [row.key for row in drained if row.document.get("auto_archive_when_drained")]
    if not wanted:
        return archived
    system = ensure_system_user(ctx)
    note = "drained: nobody is left inside; archived automatically (auto_archive_when_drained)"
    for key in wanted:
        if _change(ctx, system, key, LifecycleAction.ARCHIVE, note, confirm_inside=0):
            archived.append(key)
    return archived
