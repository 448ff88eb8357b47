"""What the lifecycle of a flow does to the records inside it (seed 000), and the flow's own
schedule (`start_at`, `archive_at`).

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
  key. A record whose step is unchanged (or only its actions changed) stays as it is, due time
  kept; one whose step changed its type or timing starts that step again at the resume; one
  whose step is gone goes where the person resuming says (`moves`: a step of the new version, or
  "end"), and the resume is refused until every removed step with records has a choice.
- A draining flow whose last record has left is archived by the system user when its definition
  says `auto_archive_when_drained: true`.
- `start_at` starts a draft and `archive_at` archives a flow, each once, at or after its instant,
  through `flows.change_status` as the system user.

Thawing runs in the status change's own transaction (so a refused resume changes nothing), over
the records that can change only, in chunks of enrollments loaded, computed and written in bulk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from crmflow.engine.definition import FlowDefinition, FlowStatus
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.transition import cancel, hears_changes, move_to, resume_recheck
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    MovesRequiredError,
    NotFoundError,
    Problem,
)
from crmflow.runner import BatchWrites
from crmflow.services import flows as flow_service
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import flow_zone
from crmflow.services.flow_access import visible_flow
from crmflow.services.record_types import catalog_in
from crmflow.services.triggers.record_changes import change_event, merge_events, user_names
from crmflow.services.triggers.schedules import catch_up_schedules
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.database import read_connection
from crmflow.store.feed import UnheardChanges, lock_feed_position, unheard_changes, unheard_of
from crmflow.store.schema import (
    enrollments,
    flow_status_changes,
    flow_versions,
    flows,
)

__all__ = [
    "END",
    "MovesRequiredError",
    "ScheduleResult",
    "StepImpact",
    "archive_drained_flows",
    "fire_lifecycle_schedule",
    "impact_preview",
    "on_status_change",
]

log = logging.getLogger("crmflow.lifecycle")

END = "end"  # a move target: the records of a removed step end (cancelled, with the reason)
_CHUNK = 2_000  # enrollments loaded, computed and written per round while thawing
_FROZEN = (FlowStatus.PAUSED, FlowStatus.ARCHIVED)
_RUNNING = (FlowStatus.ACTIVE, FlowStatus.DRAINING)

Fate = Literal["stays", "restarts", "removed"]


@dataclass(frozen=True)
class StepImpact:
    """Records at one step of an older version, and what resuming does to them."""

    step: str
    records: int
    versions: tuple[int, ...]  # the versions these records are on now
    fate: Fate
    detail: str
    move_to: str | None = None  # for a removed step: the choice given, if any

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "records": self.records,
            "versions": list(self.versions),
            "fate": self.fate,
            "detail": self.detail,
            "move_to": self.move_to,
        }


# -- what a new version does to each step -----------------------------------------------------


def _fate(old: FlowDefinition, new: FlowDefinition, key: str, version: int) -> tuple[Fate, str]:
    before, after = old.step(key), new.step(key)
    if after is None:
        return "removed", (
            f"version {version} has no step {key!r}: choose a step of version {version} "
            f"for these records (--move {key}=STEP), or end them (--move {key}={END})"
        )
    if before is None or before == after:
        return "stays", "unchanged: each record continues where it is"
    # What a record waiting at a step holds (its due time, what it waits for) comes from the
    # step's type and timing, and for waits and approvals from the whole step. When those are
    # the same the record can keep its place; otherwise its place means nothing in the new step.
    if before.type == after.type == "action" and before.timing == after.timing:
        return "stays", "actions changed: each record keeps its due time and runs the new actions"
    return "restarts", (
        "its type or timing changed: the step starts again at the resume, its timing counted "
        "from then"
    )


def _impacts(
    conn: sa.Connection,
    ctx: Context,
    flow_id: int,
    version: int,
    moves: Mapping[str, str],
) -> list[StepImpact]:
    """Per step, the records inside that are on an older version than `version` (one query)."""
    counts = conn.execute(
        sa.select(enrollments.c.flow_version, enrollments.c.step_key, sa.func.count())
        .where(
            enrollments.c.flow_id == flow_id,
            enrollments.c.status.in_(repo.RUNNING),
            enrollments.c.step_key.is_not(None),
            enrollments.c.flow_version != version,
        )
        .group_by(enrollments.c.flow_version, enrollments.c.step_key)
    ).all()
    pairs = {(flow_id, int(v)) for v, _, _ in counts} | {(flow_id, version)}
    infos = repo.load_flows(conn, pairs, definitions_cache(ctx))
    new = infos[(flow_id, version)].definition
    by_step: dict[str, tuple[int, set[int], Fate, str]] = {}
    for old_version, key, count in counts:
        fate, detail = _fate(infos[(flow_id, int(old_version))].definition, new, key, version)
        records, versions, seen_fate, seen_detail = by_step.get(key, (0, set(), fate, detail))
        if seen_fate == "restarts":  # the strongest consequence is the one to show
            fate, detail = seen_fate, seen_detail
        by_step[key] = (records + int(count), versions | {int(old_version)}, fate, detail)
    return [
        StepImpact(
            step=key,
            records=records,
            versions=tuple(sorted(versions)),
            fate=fate,
            detail=detail,
            move_to=moves.get(key) if fate == "removed" else None,
        )
        for key, (records, versions, fate, detail) in sorted(by_step.items())
    ]


def impact_preview(ctx: Context, actor: Actor, key: str) -> list[StepImpact]:
    """What resuming flow `key` does to the records inside it that are on an older version: per
    step, how many records are there and what happens to them (empty: nothing moves)."""
    with read_connection(ctx.engine) as conn:
        row = visible_flow(conn, actor, key)
        return _impacts(conn, ctx, row.id, row.current_version, {})


def _check_moves(
    impacts: Sequence[StepImpact], moves: Mapping[str, str], new: FlowDefinition, key: str
) -> None:
    """Every removed step with records has a valid choice, and nothing else is mapped."""
    problems = []
    for old_step, target in sorted(moves.items()):
        if new.step(old_step) is not None:
            problems.append(
                Problem(
                    f"moves.{old_step}",
                    f"step {old_step!r} is still in the new version; its records stay there",
                    "map only steps that the new version removed",
                )
            )
        elif target != END and new.step(target) is None:
            steps = ", ".join(s.key for s in new.steps)
            problems.append(
                Problem(
                    f"moves.{old_step}",
                    f"the new version has no step {target!r}",
                    f"choose one of: {steps}, or {END}",
                )
            )
    if problems:
        raise InvalidInputError(f"the moves for resuming {key!r}", problems)
    missing = [i for i in impacts if i.fate == "removed" and i.step not in moves]
    if missing:
        listed = "; ".join(f"{i.records} record(s) are in step {i.step!r}" for i in missing)
        options = " ".join(f"--move {i.step}=STEP|{END}" for i in missing)
        raise MovesRequiredError(
            f"the new version of {key!r} removes steps that have records inside: {listed}. "
            f"Say where they go: `crmflow flows resume {key} {options}` "
            f"(see `crmflow flows impact {key}`)",
            steps=missing,
        )


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


def _catch_up_filter(policy: str, paused_at: datetime | None, now: datetime) -> Any:
    """The enrollments the catch-up policy can change (the others are not even loaded)."""
    if paused_at is None or policy == "run_late":
        return sa.false()
    if policy == "skip_missed":
        return enrollments.c.due_at < now
    return enrollments.c.due_at.is_not(None)


def _unheard(
    conn: sa.Connection,
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
    conn: sa.Connection, unheard: UnheardChanges, record_ids: Sequence[int]
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
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    flow: sa.Row[Any],
    *,
    now: datetime,
    moves: Mapping[str, str],
) -> str:
    version = int(flow.current_version)
    cache = definitions_cache(ctx)
    new = repo.load_flows(conn, [(flow.id, version)], cache)[(flow.id, version)].definition
    _check_moves(_impacts(conn, ctx, flow.id, version, moves), moves, new, flow.key)
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
    candidates = (
        sa.select(enrollments.c.id)
        .where(
            enrollments.c.flow_id == flow.id,
            enrollments.c.status.in_(repo.RUNNING),
            sa.or_(
                enrollments.c.flow_version != version,
                _catch_up_filter(policy, paused_at, now),
                enrollments.c.record_id.in_(unheard) if unheard is not None else sa.false(),
            ),
        )
        .order_by(enrollments.c.id)
        .limit(_CHUNK)
    )
    last = 0
    while True:
        ids = list(conn.execute(candidates.where(enrollments.c.id > last)).scalars())
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
        unentered: list[dict[str, Any]] = []
        for row in rows:
            old = infos[(flow.id, row.flow_version)].definition
            if row.state is None:
                # Not entered yet (a follow-up due later): it enters the new version, and its
                # entry time is a pending due time like any other.
                due = row.due_at
                if paused_at is not None and policy == "shift_delays" and due is not None:
                    due = due + (now - paused_at)
                unentered.append({"eid": row.id, "v_version": version, "v_due": due})
                continue
            record = snapshots.get(row.record_id)
            state, definition = row.state, old
            if row.flow_version != version:
                step_key = state.step_key or ""
                fate, _ = _fate(old, new, step_key, version) if step_key else ("stays", "")
                target = moves.get(step_key) if fate == "removed" else step_key
                bumped = state.model_copy(update={"flow_version": version})
                if fate == "stays":
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
                    if fate == "restarts":
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
        if unentered:
            conn.execute(
                enrollments.update()
                .where(enrollments.c.id == sa.bindparam("eid"))
                .values(
                    flow_version=sa.bindparam("v_version"),
                    due_at=sa.bindparam("v_due"),
                    updated_at=now,
                ),
                unentered,
            )
    if paused_at is not None:
        thawed.triggers = catch_up_schedules(conn, ctx, flow.id, new, paused_at=paused_at, now=now)
    repo.notify_due(conn)  # what fell due while frozen is due now: wake the workers
    return thawed.note(policy, version)


def on_status_change(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    flow_id: int,
    current: FlowStatus,
    target: FlowStatus,
    *,
    now: datetime,
    moves: Mapping[str, str] | None = None,
) -> str:
    """Called by `flows.change_status` on its transaction, after the status changed: freeze or
    thaw the records inside. Returns what it did, for the flow's history (may be empty).

    Raises MovesRequiredError (nothing is changed) when thawing would strand records at steps
    the new version removed and `moves` does not say where they go.
    """
    moves = dict(moves or {})
    flow = conn.execute(sa.select(flows).where(flows.c.id == flow_id)).one()
    if target in _FROZEN and current in _RUNNING:
        # Frozen from now; a paused flow that is archived stays frozen since its pause. What the
        # feed passes from here on the flow does not hear (see `_unheard`).
        conn.execute(
            flows.update()
            .where(flows.c.id == flow_id)
            .values(paused_at=now, paused_feed_position=lock_feed_position(conn, now))
        )
    if target in _RUNNING and current in _FROZEN:
        note = _thaw(conn, ctx, actor, flow, now=now, moves=moves)
        conn.execute(
            flows.update()
            .where(flows.c.id == flow_id)
            .values(paused_at=None, paused_feed_position=None)
        )
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


def _archive_satisfied(archive_at: sa.ColumnElement[Any]) -> sa.Exists:
    """The flow was archived at or after its archive_at already (by it or by a person): the
    archive_at has done its work, and a flow resumed after it is not archived again."""
    return (
        sa.select(flow_status_changes.c.id)
        .where(
            flow_status_changes.c.flow_id == flows.c.id,
            flow_status_changes.c.to_status == FlowStatus.ARCHIVED.value,
            flow_status_changes.c.at >= archive_at,
        )
        .exists()
    )


def _inside(conn: sa.Connection, flow_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(enrollments)
            .where(enrollments.c.flow_id == flow_id, enrollments.c.status.in_(repo.RUNNING))
        ).scalar_one()
    )


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
        flow_service.change_status(
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
        to_start = conn.execute(
            sa.select(flows.c.id, flows.c.key, flows.c.current_version)
            .where(flows.c.status == FlowStatus.DRAFT.value, flows.c.start_at <= now)
            .order_by(flows.c.start_at, flows.c.id)
        ).all()
        documents = {
            r.flow_id: r.document
            for r in conn.execute(
                sa.select(flow_versions.c.flow_id, flow_versions.c.document)
                .join(flows, flows.c.id == flow_versions.c.flow_id)
                .where(flow_versions.c.version == flows.c.current_version)
                .where(flows.c.id.in_([r.id for r in to_start]))
            )
        }
    # Only when there is something to do: looking for the system user is a write transaction.
    system = ensure_system_user(ctx) if to_start else None
    for row in to_start:
        assert system is not None
        names = flow_service.start_list_names(documents[row.id])
        count = flow_service.start_list_size(ctx, names) if names else None
        note = "start_at reached"
        if count is not None:
            note += f"; start list counted then: {count} record(s)"
        if _change(ctx, system, row.key, LifecycleAction.START, note, confirm_count=count):
            result.started.append(row.key)
    with read_connection(ctx.engine) as conn:
        to_archive = conn.execute(
            sa.select(flows.c.id, flows.c.key)
            .where(
                flows.c.status != FlowStatus.ARCHIVED.value,
                flows.c.archive_at <= now,
                ~_archive_satisfied(flows.c.archive_at),
            )
            .order_by(flows.c.archive_at, flows.c.id)
        ).all()
        inside = {r.id: _inside(conn, r.id) for r in to_archive}
    system = system or (ensure_system_user(ctx) if to_archive else None)
    for due in to_archive:
        assert system is not None
        note = "archive_at reached"
        if inside[due.id]:
            note += f"; {inside[due.id]} record(s) inside stopped where they were"
        if _change(
            ctx, system, due.key, LifecycleAction.ARCHIVE, note, confirm_inside=inside[due.id]
        ):
            result.archived.append(due.key)
    return ScheduleResult(result.started, result.archived, _next_scheduled(ctx))


def _next_scheduled(ctx: Context) -> datetime | None:
    """The earliest start_at or archive_at still to fire (a worker sleeps no longer than that)."""
    with read_connection(ctx.engine) as conn:
        start = conn.execute(
            sa.select(sa.func.min(flows.c.start_at)).where(flows.c.status == FlowStatus.DRAFT.value)
        ).scalar_one()
        archive = conn.execute(
            sa.select(sa.func.min(flows.c.archive_at)).where(
                flows.c.status != FlowStatus.ARCHIVED.value,
                ~_archive_satisfied(flows.c.archive_at),
            )
        ).scalar_one()
    found = [t for t in (start, archive) if t is not None]
    return min(found) if found else None


def archive_drained_flows(ctx: Context) -> list[str]:
    """Archive, as the system user, every draining flow with nobody left inside whose
    definition says `auto_archive_when_drained: true`. Returns their keys."""
    running = (
        sa.select(enrollments.c.id)
        .where(enrollments.c.flow_id == flows.c.id, enrollments.c.status.in_(repo.RUNNING))
        .exists()
    )
    with read_connection(ctx.engine) as conn:
        drained = conn.execute(
            sa.select(flows.c.key, flow_versions.c.document)
            .join(
                flow_versions,
                sa.and_(
                    flow_versions.c.flow_id == flows.c.id,
                    flow_versions.c.version == flows.c.current_version,
                ),
            )
            .where(flows.c.status == FlowStatus.DRAINING.value, ~running)
            .order_by(flows.c.key)
        ).all()
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
