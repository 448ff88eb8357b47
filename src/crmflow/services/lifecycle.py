"""The lifecycle of a flow: its status changes (`change_status`, by the rules of
`engine.lifecycle`), what they do to the records inside it (seed 000), and the flow's own
schedule (`start_at`, `archive_at`).

- A status change is a compare-and-set on the flow's status, written in the flow's history with
  what it did. Starting a flow with a start list needs its count confirmed, and the list enters
  in the same transaction; pausing or archiving a flow with records inside needs their number.

- Pausing or archiving freezes the records where they are (the worker only moves records of
  active or draining flows) and notes when, `flows.paused_at`, and how far the change feed had
  read then, `flows.paused_feed_position`: the changes after it are what the flow did not hear.
- Leaving a frozen status (paused or archived -> active or draining) thaws them. A frozen flow
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

Imports run one way: `services.flows` builds on this module, which builds on
`services.flow_views` and `services.triggers`; none of those imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction, next_status
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.transition import cancel, hears_changes, move_to, resume_recheck
from crmflow.engine.version_move import END, StepImpact, check_moves, fate, step_impacts
from crmflow.errors import (
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    MovesRequiredError,
    NotFoundError,
    Problem,
)
from crmflow.runner import BatchWrites
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import flow_zone
from crmflow.services.flow_access import visible_flow
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
from crmflow.services.record_types import catalog_in
from crmflow.services.triggers import enter_start_lists
from crmflow.services.triggers.record_changes import change_event, merge_events, user_names
from crmflow.services.triggers.schedules import catch_up_schedules
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store import flows as flow_store
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.feed import UnheardChanges, lock_feed_position, unheard_changes, unheard_of
from crmflow.store.flow_enrollments import (
    inside_counts,
    move_unentered,
    steps_on_other_versions,
    thaw_candidates,
)

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

_CHUNK = 2_000  # enrollments loaded, computed and written per round while thawing
_FROZEN = (FlowStatus.PAUSED, FlowStatus.ARCHIVED)
_RUNNING = (FlowStatus.ACTIVE, FlowStatus.DRAINING)


# -- what a new version does to each step (the rules: engine.version_move) ---------------------


def _impacts(
    conn: Connection,
    ctx: Context,
    flow_id: int,
    version: int,
    moves: Mapping[str, str],
) -> list[StepImpact]:
    """Per step, the records inside that are on an older version than `version` (one query)."""
    counts = steps_on_other_versions(conn, flow_id, version)
    pairs = {(flow_id, v) for v, _, _ in counts} | {(flow_id, version)}
    infos = repo.load_flows(conn, pairs, definitions_cache(ctx))
    definitions = {v: info.definition for (_, v), info in infos.items()}
    return step_impacts(counts, definitions, version, moves)


def impact_preview(ctx: Context, actor: Actor, key: str) -> list[StepImpact]:
    """What resuming flow `key` does to the records inside it that are on an older version: per
    step, how many records are there and what happens to them (empty: nothing moves)."""
    with read_connection(ctx.engine) as conn:
        row = visible_flow(conn, actor, key)
        return _impacts(conn, ctx, row.id, row.current_version, {})


# -- freezing and thawing -----------------------------------------------------------------------


@dataclass
class _Thawed:
    caught_up: int = 0
    changed: int = 0  # records changed while frozen, looked at again
    went_on: int = 0  # of those, the ones that moved on (or left) at the resume
    kept: int = 0
    restarted: int = 0
    moved: int = 0
    ended: int = 0
    triggers: int = 0  # timed triggers (schedules, dates reached) with a run in the freeze

    def note(self, policy: str, version: int) -> str:
        parts = []
        if self.triggers:
            what = {
                "run_late": "it runs once now",
                "skip_missed": "skipped to the next run",
                "shift_delays": "shifted by the pause",
            }[policy]
            parts.append(
                f"catch-up {policy}: {self.triggers} timed trigger(s) missed a run, {what}"
            )
        if self.changed:
            parts.append(
                f"{self.changed} record(s) changed while frozen looked at again "
                f"({self.went_on} went on or left)"
            )
        if self.caught_up:
            parts.append(f"catch-up {policy}: {self.caught_up} record(s) rescheduled")
        on_new = self.kept + self.restarted + self.moved + self.ended
        if on_new:
            parts.append(
                f"{on_new} record(s) moved to version {version} ({self.kept} kept their place, "
                f"{self.restarted} restarted their step, {self.moved} moved to a chosen step, "
                f"{self.ended} ended)"
            )
        return "; ".join(parts)


def _unheard(
    conn: Connection,
    record_type: str,
    paused_at: datetime,
    paused_position: int | None,
    *,
    now: datetime,
    hears: bool,
) -> UnheardChanges:
    """The changes the frozen flow did not hear: those the change feed passed between the freeze
    and now, ids after `paused_position` (the feed's position when the flow froze) up to the
    feed's position now. The feed skips frozen flows, so these are exactly the changes nobody
    told the flow about, including one made shortly before the freeze that the feed had not read
    yet (`at` before `paused_at`). Those the feed has not reached yet it delivers after the
    resume, so they are left to it and never heard twice.

    Why ids and not times: on PostgreSQL the feed's cursor never passes a change id that may
    still commit (see `engine.feed_cursor.settle`), so every id up to the position at the freeze
    was delivered while the flow was running, and every id above it was not.

    Why the cursor row is locked at both ends (`store.feed.lock_feed_position`): the freeze and
    the resume each read the position with FOR UPDATE in the status change's transaction, as a
    feed batch does for its whole transaction. A batch running at that moment ends first and is
    counted on the side it saw: at the freeze it saw the flow running (told it its changes, and
    the position read after it includes them), at the resume it saw the flow frozen (skipped
    them, and the position includes them here). A batch starting later finds the cursor locked
    (it skips, the feed having nothing to do while another holds it) until the status change
    commits, and then sees the new status. On SQLite writers take turns (BEGIN IMMEDIATE), which
    is the same.

    A flow frozen before the position was kept (`paused_position` None, before migration 0006)
    falls back to the changes made since the freeze (`at >= paused_at`), which misses one made
    just before it and not read yet."""
    return unheard_changes(
        conn, record_type, paused_at, paused_position, now=now, deleted_only=not hears
    )


def _unheard_events(
    conn: Connection, unheard: UnheardChanges, record_ids: Sequence[int]
) -> dict[int, list[RecordChanged]]:
    """Per record of `record_ids`, its unheard changes in order, as the feed would tell them."""
    changes = unheard_of(conn, unheard, record_ids)
    if not changes:
        return {}
    names = user_names(conn, changes)
    by_record: dict[int, list[RecordChanged]] = {}
    for c in changes:
        by_record.setdefault(c.record_id, []).append(change_event(c, names))
    return by_record


def _told(events: Sequence[RecordChanged], entered_at: datetime) -> RecordChanged | None:
    """What an enrollment that entered at `entered_at` is told of its record's unheard changes:
    those made after it entered, as one (every field that changed, the values before the first
    and after the last), None when there is none. A change made before the record entered is not
    news to it, as the feed tells it too: one made just before the freeze and still unread then
    is among the unheard changes, and may be older than the enrollment (its record's creation)."""
    news = [e for e in events if e.at is None or e.at > entered_at]
    return merge_events(news) if news else None


def _thaw(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    flow: Row,
    *,
    now: datetime,
    moves: Mapping[str, str],
) -> str:
    version = int(flow.current_version)
    cache = definitions_cache(ctx)
    new = repo.load_flows(conn, [(flow.id, version)], cache)[(flow.id, version)].definition
    check_moves(_impacts(conn, ctx, flow.id, version, moves), moves, new, flow.key)
    paused_at: datetime | None = flow.paused_at
    policy = new.catch_up.mode
    types = catalog_in(conn)
    thawed = _Thawed()
    unheard = (
        _unheard(
            conn,
            new.record_type,
            paused_at,
            flow.paused_feed_position,
            now=now,
            hears=hears_changes(new),
        )
        if paused_at is not None
        else None
    )
    last = 0
    while True:
        ids = thaw_candidates(
            conn,
            flow.id,
            version,
            catch_up=policy,
            paused_at=paused_at,
            now=now,
            unheard=unheard,
            after=last,
            limit=_CHUNK,
        )
        if not ids:
            break
        last = ids[-1]
        rows = repo.lock(conn, ids, owner=None)
        infos = repo.load_flows(conn, {(flow.id, r.flow_version) for r in rows}, cache)
        snapshots = repo.load_records(conn, {r.record_id for r in rows}, types)
        heard = (
            _unheard_events(conn, unheard, sorted({r.record_id for r in rows}))
            if unheard is not None
            else {}
        )
        writes = BatchWrites()
        unentered: list[tuple[int, int, datetime | None]] = []
        for row in rows:
            old = infos[(flow.id, row.flow_version)].definition
            if row.state is None:
                # Not entered yet (a follow-up due later): it enters the new version, and its
                # entry time is a pending due time like any other.
                due = row.due_at
                if paused_at is not None and policy == "shift_delays" and due is not None:
                    due = due + (now - paused_at)
                unentered.append((row.id, version, due))
                continue
            record = snapshots.get(row.record_id)
            state, definition = row.state, old
            if row.flow_version != version:
                step_key = state.step_key or ""
                found, _ = fate(old, new, step_key, version) if step_key else ("stays", "")
                target = moves.get(step_key) if found == "removed" else step_key
                bumped = state.model_copy(update={"flow_version": version})
                if found == "stays":
                    # Same step, same timing: it keeps its place on the new version, and the
                    # resume looks at it there like at any other record.
                    thawed.kept += 1
                    state, definition = bumped, new
                elif target == END or record is None:
                    thawed.ended += 1
                    why = (
                        "the record was deleted"
                        if record is None
                        else f"step {step_key!r} was removed in version {version}; "
                        f"ended on resume by {actor.username}"
                    )
                    writes.add(
                        row.state, cancel(bumped, now=now, reason=why), row.record_id, flow.key
                    )
                    continue
                else:
                    # Its step starts again (or a chosen one starts) at the resume, with the
                    # record as it is now: nothing of the freeze is left to catch up.
                    assert target is not None  # _check_moves made sure every removed step has one
                    if found == "restarts":
                        thawed.restarted += 1
                    else:
                        thawed.moved += 1
                    outcome = move_to(
                        new,
                        bumped,
                        record,
                        target,
                        now=now,
                        zone=flow_zone(ctx, new),
                        record_type=types.get(new.record_type),
                        limits=ctx.evaluation_limits,
                    )
                    writes.add_outcome(row.state, outcome, flow.key)
                    continue
            if paused_at is None:
                if state != row.state:
                    writes.add(row.state, state, row.record_id, flow.key)
                continue
            change = _told(heard.get(row.record_id, ()), row.entered_at)
            outcome = resume_recheck(
                definition,
                state,
                record or RecordSnapshot(row.record_id, definition.record_type, {}),
                change=change,
                paused_at=paused_at,
                resumed_at=now,
                zone=flow_zone(ctx, definition),
                policy=new.catch_up,
                record_type=types.get(definition.record_type),
                limits=ctx.evaluation_limits,
            )
            if change is not None:
                thawed.changed += 1
                if outcome.log or outcome.state.step_key != state.step_key:
                    thawed.went_on += 1
            if outcome.log or outcome.commands:
                writes.add_outcome(row.state, outcome, flow.key)
                continue
            if change is None and outcome.state != state:
                thawed.caught_up += 1
            if outcome.state != row.state:
                writes.add(row.state, outcome.state, row.record_id, flow.key)
        writes.write(conn, ctx, actor, now=now)
        move_unentered(conn, unentered, now=now)
    if paused_at is not None:
        thawed.triggers = catch_up_schedules(conn, ctx, flow.id, new, paused_at=paused_at, now=now)
    repo.notify_due(conn)  # what fell due while frozen is due now: wake the workers
    return thawed.note(policy, version)


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
) -> FlowView:
    """Apply a lifecycle action (PreconditionFailedError unless the flow is at `if_revision`,
    when given).

    Starting a flow that has a start list needs `confirm_count` equal to the number of records
    the list holds now (ConfirmationRequiredError tells the number). Pausing or archiving a flow
    with records inside needs `confirm_inside` equal to that number. Resuming a flow edited while
    paused or archived takes `moves` ({removed step: new step or "end"}) for the records at
    steps the new version removed (see `on_status_change`). `system`: crmflow itself makes the
    change (start_at, archive_at, auto-archive), so the flow is found whatever its visibility.
    """
    require_admin(actor, f"{action.value} flows")
    flow = any_flow(ctx, key) if system else get_flow(ctx, actor, key)
    assert flow.document is not None
    require_revision(key, flow.revision, if_revision)
    current = flow.status
    target = next_status(current, action)
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
        done = on_status_change(conn, ctx, actor, flow.id, current, target, now=now, moves=moves)
        note = "; ".join(n for n in (note, done) if n)
        log_status_change(
            conn, ctx, actor, flow.id, current.value, target.value, flow.version, note
        )
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
) -> str:
    """Called by `change_status` on its transaction, after the status changed: freeze or
    thaw the records inside. Returns what it did, for the flow's history (may be empty).

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
    if target in _RUNNING and current in _FROZEN:
        note = _thaw(conn, ctx, actor, flow, now=now, moves=moves)
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
