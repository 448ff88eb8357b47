"""Thawing a frozen flow: what leaving a frozen status (paused or archived -> active or
draining) does to the records inside it (seed 000), in the status change's own transaction (so
a refused resume changes nothing; `services.lifecycle.change_status` calls `thaw`).

- A frozen flow hears no record change, so first each record changed during the freeze is looked
  at again as it is now, through the engine's `resume_recheck` (its changes told as one): deleted
  or goal met, it leaves; a wait whose condition now holds or whose field changed goes on; a step
  waiting for a record's date has its time recomputed from the date as it is now. Then the
  current version's catch-up policy decides what happens to the time that passed (run_late,
  skip_missed, shift_delays), for the records and for the timed triggers.
- A flow edited while frozen has a new version; thawing moves every record inside to it by step
  key, by the rules of `engine.version_move` (stays, restarts, or goes where `moves` says).

Only the records that can change are loaded, in chunks of enrollments loaded, computed and
written in bulk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import EnrollmentState, RecordChanged, RecordSnapshot
from crmflow.engine.transition import cancel, hears_changes, move_to, resume_recheck
from crmflow.engine.version_move import END, StepImpact, check_moves, fate, step_impacts
from crmflow.runner import BatchWrites
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import flow_zone
from crmflow.services.flow_access import visible_flow
from crmflow.services.record_types import catalog_in
from crmflow.services.triggers.record_changes import change_event, merge_events, user_names
from crmflow.services.triggers.schedules import catch_up_schedules
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.enrollments import move_unentered, steps_on_other_versions, thaw_candidates
from crmflow.store.feed import UnheardChanges, unheard_changes, unheard_of
from crmflow.store.tasks import shift_open_dues

__all__ = ["impact_preview", "thaw"]

_CHUNK = 2_000  # enrollments loaded, computed and written per round while thawing


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


def thaw(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    flow: Row,
    *,
    now: datetime,
    moves: Mapping[str, str],
) -> str:
    """Thaw the records inside `flow` (its `flows` row, frozen since `flow.paused_at`) as it
    leaves its frozen status at `now`, moving them to its current version (`moves`: where the
    records of removed steps go). What it did, for the flow's history (may be empty).
    MovesRequiredError (nothing changed) when a removed step with records has no move."""
    version = int(flow.current_version)
    cache = definitions_cache(ctx)
    new = repo.load_flows(conn, [(flow.id, version)], cache)[(flow.id, version)].definition
    check_moves(_impacts(conn, ctx, flow.id, version, moves), moves, new, flow.key)
    paused_at: datetime | None = flow.paused_at
    types = catalog_in(conn)
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
    run = _Thaw(conn, ctx, actor, flow, new, moves, now, paused_at, types, cache)
    last = 0
    while True:
        ids = thaw_candidates(
            conn,
            flow.id,
            version,
            catch_up=new.catch_up.mode,
            paused_at=paused_at,
            now=now,
            unheard=unheard,
            after=last,
            limit=_CHUNK,
        )
        if not ids:
            break
        last = ids[-1]
        run.chunk(ids, unheard)
    if paused_at is not None:
        run.done.triggers = catch_up_schedules(
            conn, ctx, flow.id, new, paused_at=paused_at, now=now
        )
        if new.catch_up.mode == "shift_delays":
            # Deadlines are the due times of the steps' tasks: they move by the pause too.
            shift_open_dues(conn, flow.id, now - paused_at)
    repo.notify_due(conn)  # what fell due while frozen is due now: wake the workers
    return run.done.note(new.catch_up.mode, version)


@dataclass
class _Thaw:
    """One thaw of `flow` at `now` onto its current version `new`, a chunk of enrollments at a
    time, and what it did (`done`)."""

    conn: Connection
    ctx: Context
    actor: Actor
    flow: Row
    new: FlowDefinition
    moves: Mapping[str, str]
    now: datetime
    paused_at: datetime | None
    types: dict[str, RecordType]
    cache: dict[tuple[int, int], FlowDefinition]
    done: _Thawed = field(default_factory=_Thawed)

    @property
    def version(self) -> int:
        return int(self.flow.current_version)

    @property
    def _cancels(self) -> bool:
        """The flow's `cancel_open_tasks_on_end` (a run that ends cancels its open tasks)."""
        return self.new.cancel_open_tasks_on_end

    def chunk(self, ids: Sequence[int], unheard: UnheardChanges | None) -> None:
        """Lock, load, compute and write the enrollments `ids` in bulk."""
        conn, flow = self.conn, self.flow
        rows = repo.lock(conn, ids)
        infos = repo.load_flows(conn, {(flow.id, r.flow_version) for r in rows}, self.cache)
        snapshots = repo.load_records(conn, {r.record_id for r in rows}, self.types)
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
                unentered.append((row.id, self.version, self._entry_due(row)))
                continue
            record = snapshots.get(row.record_id)
            state, definition = row.state, old
            if row.flow_version != self.version:
                bumped = self._onto_new_version(row, row.state, old, record, writes)
                if bumped is None:
                    continue
                state, definition = bumped, self.new
            self._recheck(row, state, definition, record, heard.get(row.record_id, ()), writes)
        writes.write(conn, self.ctx, self.actor, now=self.now)
        move_unentered(conn, unentered, now=self.now)

    def _entry_due(self, row: repo.EnrollmentRow) -> datetime | None:
        """When an enrollment not entered yet (a follow-up due later) enters the new version:
        its entry time is a pending due time like any other."""
        due = row.due_at
        shifted = self.new.catch_up.mode == "shift_delays"
        if self.paused_at is not None and shifted and due is not None:
            due = due + (self.now - self.paused_at)
        return due

    def _onto_new_version(
        self,
        row: repo.EnrollmentRow,
        state: EnrollmentState,
        old: FlowDefinition,
        record: RecordSnapshot | None,
        writes: BatchWrites,
    ) -> EnrollmentState | None:
        """Move an enrollment on an older version to the new one, by its step's fate
        (`engine.version_move`). Its state on the new version when it keeps its place there
        (the resume then looks at it like at any other record); None when it was ended, or
        started its step again or a chosen one, here (its outcome added to `writes`)."""
        new, version, now = self.new, self.version, self.now
        step_key = state.step_key or ""
        found, _ = fate(old, new, step_key, version) if step_key else ("stays", "")
        target = self.moves.get(step_key) if found == "removed" else step_key
        bumped = state.model_copy(update={"flow_version": version})
        if found == "stays":
            # Same step, same timing: it keeps its place on the new version.
            self.done.kept += 1
            return bumped
        if target == END or record is None:
            self.done.ended += 1
            why = (
                "the record was deleted"
                if record is None
                else f"step {step_key!r} was removed in version {version}; "
                f"ended on resume by {self.actor.username}"
            )
            writes.add(state, cancel(bumped, now=now, reason=why), row.record_id, self.flow.key)
            return None
        # Its step starts again (or a chosen one starts) at the resume, with the record as it
        # is now: nothing of the freeze is left to catch up.
        assert target is not None  # check_moves made sure every removed step has one
        if found == "restarts":
            self.done.restarted += 1
        else:
            self.done.moved += 1
        outcome = move_to(
            new,
            bumped,
            record,
            target,
            now=now,
            zone=flow_zone(self.ctx, new),
            record_type=self.types.get(new.record_type),
            limits=self.ctx.evaluation_limits,
        )
        writes.add_outcome(state, outcome, self.flow.key, cancel_tasks_on_end=self._cancels)
        return None

    def _recheck(
        self,
        row: repo.EnrollmentRow,
        state: EnrollmentState,
        definition: FlowDefinition,
        record: RecordSnapshot | None,
        events: Sequence[RecordChanged],
        writes: BatchWrites,
    ) -> None:
        """Look at an enrollment again as the resume finds it (`resume_recheck`: the unheard
        `events` of its record, then the catch-up policy), and add what changed to `writes`."""
        if self.paused_at is None:
            if state != row.state:
                writes.add(row.state, state, row.record_id, self.flow.key)
            return
        change = _told(events, row.entered_at)
        outcome = resume_recheck(
            definition,
            state,
            record or RecordSnapshot(row.record_id, definition.record_type, {}),
            change=change,
            paused_at=self.paused_at,
            resumed_at=self.now,
            zone=flow_zone(self.ctx, definition),
            policy=self.new.catch_up,
            record_type=self.types.get(definition.record_type),
            limits=self.ctx.evaluation_limits,
        )
        if change is not None:
            self.done.changed += 1
            if outcome.log or outcome.state.step_key != state.step_key:
                self.done.went_on += 1
        if outcome.log or outcome.commands:
            writes.add_outcome(row.state, outcome, self.flow.key, cancel_tasks_on_end=self._cancels)
            return
        if change is None and outcome.state != state:
            self.done.caught_up += 1
        if outcome.state != row.state:
            writes.add(
                row.state,
                outcome.state,
                row.record_id,
                self.flow.key,
                cancel_tasks_on_end=self._cancels,
            )
