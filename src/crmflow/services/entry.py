"""Whether records may enter a flow, decided for many records at once, and the reason kept when
they may not (`entry_decisions`).

Every trigger funnels into the same rules, in this order: the flow admits records only while it
is active; the loop guard; the re-entry policy; the entry condition (CEL over `record` and
`change`). Each refusal becomes one `entry_decisions` row with a reason written for the person
who asks "why did this record not enter?".

Everything here works on a batch: the enrollments that bear on the re-entry policy and the loop
guard of all the batch's (flow, record) pairs are read with one query per chunk, the entry
condition is evaluated in Python (CEL cannot run in SQL), and admitted records are inserted with
one executemany. The one-by-one path is the loop guard tripping, which cancels and notifies: it
is rare by nature (a flow that keeps restarting itself) and is the same code as manual starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.definition import FlowDefinition, ReentryPolicy
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError, Scope
from crmflow.services.context import Context
from crmflow.store import enrollments as repo
from crmflow.store.schema import enrollments, entry_decisions, notifications

__all__ = [
    "LOOP_GUARD_LIMIT",
    "Candidate",
    "Decision",
    "FlowRef",
    "PastEntry",
    "Verdict",
    "admission_refusal",
    "condition_refusal",
    "decide_entries",
    "flow_zone",
    "insert_enrollments",
    "loop_guard_reason",
    "notify_loop_guard",
    "past_entries",
    "reentry_refusal",
    "write_decisions",
]

LOOP_GUARD_LIMIT = 10  # starts of one flow for one record in 24 hours (seed 004)

_CHUNK = 5_000  # (flow, record) pairs per history query: well below SQLite's parameter limit


@dataclass(frozen=True)
class FlowRef:
    """The flow as entry decisions need it: its row's identity and status, its definition."""

    id: int
    key: str
    status: str
    version: int
    definition: FlowDefinition


@dataclass(frozen=True)
class Candidate:
    """A record a trigger proposes for a flow; `record` is what the entry condition sees."""

    flow: FlowRef
    record_id: int
    trigger: str
    record: RecordSnapshot | None = None
    change: RecordChanged | None = None
    change_id: int | None = None
    caused_by: str | None = None  # the username behind the change (told if the loop guard trips)


@dataclass(frozen=True)
class Decision:
    """A record that was considered and did not enter, and why."""

    flow_id: int
    record_id: int
    trigger: str
    reason: str
    change_id: int | None = None


@dataclass
class Verdict:
    admitted: list[Candidate] = field(default_factory=list)
    refused: list[Decision] = field(default_factory=list)
    tripped: list[Candidate] = field(default_factory=list)  # the loop guard must act on these


@dataclass(frozen=True)
class PastEntry:
    status: str
    step_key: str | None
    entered_at: datetime


def flow_zone(ctx: Context, definition: FlowDefinition) -> ZoneInfo:
    return ZoneInfo(definition.timezone) if definition.timezone else ctx.zone


def loop_guard_reason(flow_key: str, record_id: int) -> str:
    """The words of the loop guard, the same on every path into a flow (seed 004)."""
    return (
        f"loop guard: flow {flow_key!r} was started more than {LOOP_GUARD_LIMIT} times "
        f"for record {record_id} within a day"
    )


def notify_loop_guard(
    conn: sa.Connection,
    *,
    reason: str,
    controller: str | None,
    told: str | None,
    enrollment_id: int,
    record_id: int,
    now: datetime,
    origin: str = "",
) -> None:
    """Tell the flow's controller and `told` (the user who caused the start) that the loop
    guard cancelled the flow for the record. `origin` says where the start came from and who
    began it; without it, a message with nobody to tell but the controller says the user who
    caused it is not known."""
    message = f"{reason}; the flow was cancelled for this record"
    if origin:
        message += f" ({origin})"
    elif not told:
        message += " (the user who caused it is not known)"
    targets = sorted({name for name in (told, controller) if name})
    if targets:
        conn.execute(
            notifications.insert(),
            [
                {
                    "target_kind": "user",
                    "target_ref": name,
                    "message": message,
                    "enrollment_id": enrollment_id,
                    "record_id": record_id,
                    "created_at": now,
                }
                for name in targets
            ],
        )


def admission_refusal(status: str) -> str | None:
    """Why a flow in `status` admits nobody, or None for an active flow."""
    if status == "active":
        return None
    return {
        "draining": "flow draining: records inside finish, no new record enters",
        "paused": "flow paused: no record enters until it is resumed",
        "archived": "flow archived: no record enters",
        "draft": "flow is a draft: no record enters until it is started",
    }.get(status, f"flow is {status}: no record enters")


def condition_refusal(
    definition: FlowDefinition,
    record: RecordSnapshot,
    *,
    change: RecordChanged | None,
    now: datetime,
    zone: ZoneInfo,
    limits: EvaluationLimits,
) -> str | None:
    """Why the entry condition keeps `record` out, or None when there is none or it holds
    (evaluated within `limits`, whose runner takes a heavy condition)."""
    expression = definition.entry_condition
    if not expression:
        return None
    scope = Scope(flow=definition, record=record, now=now, zone=zone, change=change, limits=limits)
    try:
        if scope.holds(expression):
            return None
    except EvaluationError as exc:
        return f"entry condition could not be evaluated, counted as false: {exc}"
    return f"entry condition false: {expression}"


def reentry_refusal(
    policy: ReentryPolicy, past: Sequence[PastEntry], *, now: datetime
) -> str | None:
    """Why the re-entry policy keeps the record out now, or None when it may enter.

    `past` are the record's enrollments in the flow, newest first; cancelled ones do not count
    (a start cancelled by the loop guard or by hand is not a passage through the flow).
    """
    rows = [p for p in past if p.status != "cancelled"]
    if not rows or policy.mode == "always":
        return None
    if policy.mode == "never":
        return (
            f"re-entry: never, and the record already went through this flow "
            f"(entered {rows[0].entered_at:%Y-%m-%d})"
        )
    inside = [r for r in rows if r.status in repo.RUNNING]
    if inside:
        where = f" at step {inside[0].step_key!r}" if inside[0].step_key else ""
        return f"already inside this flow{where}"
    if policy.mode == "once_per_days" and policy.days:
        again = rows[0].entered_at + timedelta(days=policy.days)
        if again > now:
            return (
                f"re-entry: once per {policy.days} days, last entered "
                f"{rows[0].entered_at:%Y-%m-%d} (may enter again from {again:%Y-%m-%d %H:%M} UTC)"
            )
    return None


def past_entries(
    conn: sa.Connection, pairs: Iterable[tuple[int, int]], *, since: datetime | None = None
) -> dict[tuple[int, int], list[PastEntry]]:
    """The enrollments of each (flow id, record id) pair, newest first, in one query per chunk
    of records. With `since`, only those that bear on the policies: inside now, or entered after
    `since` (the caller passes the longest look-back it needs), or any for 'never'."""
    wanted = set(pairs)
    out: dict[tuple[int, int], list[PastEntry]] = {}
    if not wanted:
        return out
    flow_ids = sorted({f for f, _ in wanted})
    record_ids = sorted({r for _, r in wanted})
    for i in range(0, len(record_ids), _CHUNK):
        query = (
            sa.select(
                enrollments.c.flow_id,
                enrollments.c.record_id,
                enrollments.c.status,
                enrollments.c.step_key,
                enrollments.c.entered_at,
            )
            .where(enrollments.c.record_id.in_(record_ids[i : i + _CHUNK]))
            .where(enrollments.c.flow_id.in_(flow_ids))
            .order_by(enrollments.c.entered_at.desc(), enrollments.c.id.desc())
        )
        if since is not None:
            query = query.where(
                sa.or_(enrollments.c.status.in_(repo.RUNNING), enrollments.c.entered_at > since)
            )
        for r in conn.execute(query):
            key = (r.flow_id, r.record_id)
            if key in wanted:
                out.setdefault(key, []).append(PastEntry(r.status, r.step_key, r.entered_at))
    return out


def decide_entries(
    conn: sa.Connection, ctx: Context, candidates: Sequence[Candidate], *, now: datetime
) -> Verdict:
    """Split `candidates` (in the order their triggers fired) into admitted and refused.

    A record proposed twice in one batch (created, then updated) is judged the second time
    knowing that it entered the first time, as if the batch had run one change at a time.
    """
    verdict = Verdict()
    past = past_entries(conn, {(c.flow.id, c.record_id) for c in candidates})
    for c in candidates:
        key = (c.flow.id, c.record_id)
        history = past.setdefault(key, [])
        reason = admission_refusal(c.flow.status)
        if reason is None:
            day_ago = now - timedelta(days=1)
            if sum(1 for p in history if p.entered_at > day_ago) >= LOOP_GUARD_LIMIT:
                reason = loop_guard_reason(c.flow.key, c.record_id)
                verdict.tripped.append(c)
                # The trip cancels what is inside: count it so a second change in the same
                # batch is refused without tripping again.
                history.insert(0, PastEntry("cancelled", None, now))
        if reason is None:
            reason = reentry_refusal(c.flow.definition.reentry, history, now=now)
        if reason is None and c.record is not None:
            zone = flow_zone(ctx, c.flow.definition)
            reason = condition_refusal(
                c.flow.definition,
                c.record,
                change=c.change,
                now=now,
                zone=zone,
                limits=ctx.evaluation_limits,
            )
        if reason is None:
            verdict.admitted.append(c)
            history.insert(0, PastEntry("active", None, now))
        else:
            verdict.refused.append(Decision(c.flow.id, c.record_id, c.trigger, reason, c.change_id))
    return verdict


def insert_enrollments(
    conn: sa.Connection,
    rows: Sequence[tuple[int, int, int]],
    *,
    now: datetime,
    due_at: datetime,
) -> list[int]:
    """New enrollments (flow id, flow version, record id) that enter at `due_at` (their state is
    written when they do), in one executemany; their ids, in the order of `rows`."""
    if not rows:
        return []
    result = conn.execute(
        enrollments.insert().returning(enrollments.c.id, sort_by_parameter_order=True),
        [
            {
                "flow_id": f,
                "flow_version": v,
                "record_id": r,
                "status": "active",
                "entered_at": now,
                "due_at": due_at,
                "updated_at": now,
            }
            for f, v, r in rows
        ],
    )
    return [int(i) for i in result.scalars()]


def write_decisions(conn: sa.Connection, decisions: Sequence[Decision], *, now: datetime) -> None:
    if decisions:
        conn.execute(
            entry_decisions.insert(),
            [_decision_row(d, now) for d in decisions],
        )


def _decision_row(d: Decision, now: datetime) -> dict[str, Any]:
    return {
        "flow_id": d.flow_id,
        "record_id": d.record_id,
        "trigger": d.trigger,
        "change_id": d.change_id,
        "reason": d.reason,
        "at": now,
    }
