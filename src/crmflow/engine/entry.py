"""Whether a record may enter a flow: the rules every path into a flow follows, without a
database (the facts are arguments: the flow's status and definition, the record's past entries
in the flow, the record and the change that proposed it, `now`).

The rules, in their order (the first that refuses says why):

1. admission: only an active flow admits records (`admission_refusal`);
2. the loop guard (seed 004): the 11th start of a flow for one record within 24 hours trips it
   (`loop_guard_trips`); the caller then acts (cancels what is inside, tells the controller);
3. the re-entry policy, over the record's past entries in the flow (`reentry_refusal`);
4. the entry condition, CEL over `record` and `change` (`condition_refusal`).

`decide` applies them to many candidates at once, in the order their triggers fired;
`entry_refusal` to one record (what `simulate` says when a record would not enter). The services
read the past entries (one query per chunk) and write the decisions; the batch runner holds a
start the loop guard tripped on with the status `HELD`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.definition import FlowDefinition, ReentryPolicy
from crmflow.engine.runtime import EnrollmentStatus, RecordChanged, RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError, Scope

__all__ = [
    "HELD",
    "INSIDE",
    "LOOP_GUARD_LIMIT",
    "Candidate",
    "Decision",
    "FlowRef",
    "PastEntry",
    "Verdict",
    "admission_refusal",
    "condition_refusal",
    "decide",
    "entry_refusal",
    "loop_guard_reason",
    "loop_guard_trips",
    "reentry_refusal",
]

LOOP_GUARD_LIMIT = 10  # starts of one flow for one record in 24 hours (seed 004)
_LOOP_GUARD_WINDOW = timedelta(days=1)

# A start the loop guard tripped on that comes due later (a follow-up made inside a batch): it
# never enters, and its turn cancels every enrollment of the record in the flow.
HELD = EnrollmentStatus.HELD.value
# The statuses of an enrollment still inside its flow (a held start included: it is due).
INSIDE = (EnrollmentStatus.ACTIVE.value, EnrollmentStatus.WAITING.value, HELD)


@dataclass(frozen=True)
class PastEntry:
    """One of the record's enrollments in the flow, as the rules need it."""

    status: str
    step_key: str | None
    entered_at: datetime


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


def loop_guard_reason(flow_key: str, record_id: int) -> str:
    """The words of the loop guard, the same on every path into a flow (seed 004)."""
    return (
        f"loop guard: flow {flow_key!r} was started more than {LOOP_GUARD_LIMIT} times "
        f"for record {record_id} within a day"
    )


def loop_guard_trips(past: Sequence[PastEntry], *, now: datetime) -> bool:
    """Whether one more start trips the loop guard: the record already entered the flow
    `LOOP_GUARD_LIMIT` times within the last 24 hours (cancelled starts count: a loop is a
    loop however its starts ended)."""
    day_ago = now - _LOOP_GUARD_WINDOW
    return sum(1 for p in past if p.entered_at > day_ago) >= LOOP_GUARD_LIMIT


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
    rows = [p for p in past if p.status != EnrollmentStatus.CANCELLED.value]
    if not rows or policy.mode == "always":
        return None
    if policy.mode == "never":
        return (
            f"re-entry: never, and the record already went through this flow "
            f"(entered {rows[0].entered_at:%Y-%m-%d})"
        )
    inside = [r for r in rows if r.status in INSIDE]
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


def decide(
    candidates: Sequence[Candidate],
    past: Mapping[tuple[int, int], Sequence[PastEntry]],
    *,
    now: datetime,
    zone_of: Callable[[FlowDefinition], ZoneInfo],
    limits: EvaluationLimits,
) -> Verdict:
    """Split `candidates` (in the order their triggers fired) into admitted, refused and
    tripped (refused by the loop guard, which the caller makes act). `past` holds each
    (flow id, record id) pair's entries, newest first; `zone_of` gives a flow's time zone.

    A record proposed twice in one batch (created, then updated) is judged the second time
    knowing that it entered the first time, as if the batch had run one change at a time.
    """
    verdict = Verdict()
    histories = {key: list(entries) for key, entries in past.items()}
    for c in candidates:
        history = histories.setdefault((c.flow.id, c.record_id), [])
        reason = admission_refusal(c.flow.status)
        if reason is None and loop_guard_trips(history, now=now):
            reason = loop_guard_reason(c.flow.key, c.record_id)
            verdict.tripped.append(c)
            # The trip writes this start, cancelled: count it, as the next change of the record
            # would find it in the database.
            history.insert(0, PastEntry(EnrollmentStatus.CANCELLED.value, None, now))
        if reason is None:
            reason = reentry_refusal(c.flow.definition.reentry, history, now=now)
        if reason is None and c.record is not None:
            reason = condition_refusal(
                c.flow.definition,
                c.record,
                change=c.change,
                now=now,
                zone=zone_of(c.flow.definition),
                limits=limits,
            )
        if reason is None:
            verdict.admitted.append(c)
            history.insert(0, PastEntry(EnrollmentStatus.ACTIVE.value, None, now))
        else:
            verdict.refused.append(Decision(c.flow.id, c.record_id, c.trigger, reason, c.change_id))
    return verdict


def entry_refusal(
    flow_status: str,
    definition: FlowDefinition,
    record: RecordSnapshot,
    *,
    past: Sequence[PastEntry] = (),
    change: RecordChanged | None = None,
    now: datetime,
    zone: ZoneInfo,
    limits: EvaluationLimits,
) -> str | None:
    """Why `record` would not enter `definition`'s flow now (in `flow_status`, with `past`
    entries, newest first), or None when it would: `decide` for one record."""
    flow = FlowRef(0, definition.key, flow_status, 1, definition)
    verdict = decide(
        [Candidate(flow, record.id, "simulation", record, change)],
        {(0, record.id): past},
        now=now,
        zone_of=lambda _: zone,
        limits=limits,
    )
    return verdict.refused[0].reason if verdict.refused else None
