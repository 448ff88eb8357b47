"""Records going through flows: start one by hand or by API, decide an approval, restart or
cancel a run (what users see of them is in `run_views`).

Each use-case checks who may do it and what the flow allows, then hands the enrollment to the
batch runner (`crmflow.runner.move_batch`), which runs the engine and writes what it decided on
the use-case's transaction, as for the worker's batches.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from crmflow.engine.approvals import GROUP_PREFIX, Decider, Requester, decision_refusal
from crmflow.engine.definition import ApprovalStep, FlowDefinition
from crmflow.engine.entry import Candidate, Decision, FlowRef, admission_refusal
from crmflow.engine.runtime import DecisionMade, EnrollmentState, EnrollmentStatus, WaitKind
from crmflow.engine.transition import cancel
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Problem,
)
from crmflow.runner import (
    Reference,
    close_tasks,
    condition_refusal_for,
    load_reference,
    move_batch,
    state_of,
    trip_loop_guard,
)
from crmflow.runner.people import with_people
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import decide_entries, write_decisions
from crmflow.services.flow_access import can_see_flow, visible_flow
from crmflow.services.permissions import require_manager
from crmflow.services.run_views import EnrollmentView, enrollment_view
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.flows import find_flow
from crmflow.store.groups import active_members_of_groups, group_names_by_user
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.record_types import record_type_catalog
from crmflow.store.records import find_record, record_type_of
from crmflow.store.users import find_user_by_name, usernames_by_id

# What users see of runs (views, lists, progress) is in `run_views`; the batch runner is
# `crmflow.runner`.
__all__ = [
    "BeforeDecision",
    "cancel_enrollment",
    "decide",
    "decision_refusal_for",
    "keep_refusal",
    "restart_enrollment",
    "start_one",
    "start_record",
]

# -- use-cases -------------------------------------------------------------------------------------


def _admission(flow: Row, definition: FlowDefinition) -> str | None:
    # The same words as the other triggers ("flow draining: ..."), kept in the not-entered list.
    if flow.status == "draft":
        return f"flow is a draft; start it first (`crmflow flows start {flow.key}`)"
    refusal = admission_refusal(flow.status)
    if refusal is not None:
        return refusal
    if not any(t.type == "manual" for t in definition.triggers):
        return "the flow has no manual trigger (add `- type: manual` to its triggers)"
    return None


def start_record(
    ctx: Context, actor: Actor, flow_key: str, record_id: int, *, test: bool = False
) -> EnrollmentView:
    """Start flow `flow_key` for one record now (a person's or a program's start): its first
    steps run at once when they are due. With `test`, in test mode: every message of the run
    goes to the flow's test recipients instead (`engine.test_mode`); a flow without any is
    refused (InvalidInputError). Refused with the reason (ConflictError) when the flow
    does not admit records now, the record's type is not the flow's, the re-entry policy keeps
    it out or the flow's entry condition is false; the reason is kept on the record and in the
    flow's not-entered list (trigger 'manual'). The 11th start of a flow for a record within a
    day trips the loop guard: the start is recorded as cancelled, the record's running
    enrollment in the flow is cancelled, and the flow's controller and `actor` are notified."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        # Locking the flow row serialises starts of one flow, so a record cannot enter twice.
        flow = visible_flow(conn, actor, flow_key, for_update=True)
        record_type = record_type_of(conn, record_id)
        if record_type is None:
            raise NotFoundError(f"no record with id {record_id}")
        definition = _definition(conn, ctx, flow)
        if test and not definition.test_recipients:
            raise InvalidInputError(
                f"a test start of flow {flow_key!r}",
                [
                    Problem(
                        "test_recipients",
                        "the flow has no test recipients, so a test run would message nobody",
                        "add e.g. `test_recipients: [you@example.org, +40 721 000 000]` to the "
                        "flow's document and save it, then start it again with test",
                    )
                ],
            )
        started = start_one(
            conn,
            ctx,
            actor,
            flow,
            definition,
            record_id,
            record_type,
            refusal=_admission(flow, definition),
            told=actor.username,
            now=now,
            test_to=definition.test_recipients if test else None,
        )
        if isinstance(started, int):
            return enrollment_view(conn, ctx, started)
        keep_refusal(conn, flow, record_id, "manual", started, f"by {actor.username}", now=now)
    raise ConflictError(f"record {record_id} was not entered in flow {flow_key!r}: {started}")


def _definition(conn: Connection, ctx: Context, flow: Row) -> FlowDefinition:
    [info] = repo.load_flows(
        conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
    ).values()
    return info.definition


def start_one(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    flow: Row,
    definition: FlowDefinition,
    record_id: int,
    record_type: str,
    *,
    refusal: str | None,
    told: str | None,
    now: datetime,
    test_to: list[str] | None = None,
) -> int | str:
    """The rules of a start for one record, in their order (after `refusal`, the caller's own:
    the flow's status, its trigger): the record's type, the loop guard (which acts: see
    `trip_loop_guard`; `told` is the user to tell), the re-entry policy, the entry condition.
    The new enrollment's id, its first steps run; or why the record did not enter.
    The caller holds the flow row locked (`FOR UPDATE`), so a record cannot enter twice."""
    if refusal is None and record_type != definition.record_type:
        refusal = f"the flow runs on {definition.record_type} records, not {record_type}"
    if refusal is not None:
        return refusal
    # The rules every trigger follows (active flow, loop guard, re-entry, entry condition).
    types = record_type_catalog(conn)
    snapshots = repo.load_records(conn, [record_id], types)
    snapshot = snapshots[record_id]
    ref = FlowRef(flow.id, flow.key, flow.status, flow.current_version, definition)
    verdict = decide_entries(conn, ctx, [Candidate(ref, record_id, "manual", snapshot)], now=now)
    if verdict.tripped:
        return trip_loop_guard(
            conn,
            flow_id=flow.id,
            flow_key=flow.key,
            flow_version=flow.current_version,
            controller=definition.controller,
            record_id=record_id,
            told=told,
            now=now,
        )
    if verdict.refused:
        return verdict.refused[0].reason
    eid = repo.insert_enrollment(
        conn,
        flow_id=flow.id,
        flow_version=flow.current_version,
        record_id=record_id,
        now=now,
        due_at=now,
        test_to=test_to,
    )
    # The batch runner reads what was read above (nothing changed the record since): it is
    # given, with the flow, rather than read twice.
    infos = repo.load_flows(conn, [(flow.id, flow.current_version)], definitions_cache(ctx))
    rows = repo.lock(conn, [eid])
    reference = Reference(infos, types, with_people(conn, infos, snapshots, types))
    move_batch(conn, ctx, actor, rows, now=now, reference=reference)
    repo.notify_due(conn)
    return eid


def keep_refusal(
    conn: Connection,
    flow: Row,
    record_id: int,
    trigger: str,
    refusal: str,
    source: str,
    *,
    now: datetime,
) -> None:
    """Why a start did not enter the record: on the record's history (`source` says who or what
    asked: "by andrei") and in the flow's not-entered list."""
    message = f"not entered in flow {flow.key!r} ({source}): {refusal}"
    insert_history(conn, [HistoryEntry(record_id, None, message, now)])
    write_decisions(conn, [Decision(flow.id, record_id, trigger, refusal)], now=now)


def cancel_enrollment(
    ctx: Context, actor: Actor, enrollment_id: int, reason: str | None = None
) -> EnrollmentView:
    """Stop one record's run by hand (managers and admins): it ends cancelled where it is, its
    open tasks are cancelled and its messages not yet sent are not sent; the record's history
    says who did it and why. A run that has already ended is refused, with how it ended."""
    require_manager(actor, "cancel a record's run")
    now = ctx.now()
    why = f"cancelled by {actor.username}" + (
        f": {reason.strip()}" if reason and reason.strip() else ""
    )
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if row.status not in repo.RUNNING:
            ended = row.state.end_reason if row.state is not None else ""
            raise ConflictError(
                f"enrollment {enrollment_id} has already ended ({row.status}"
                + (f": {ended})" if ended else ")")
            )
        state = state_of(row, flow.key, entered_at=row.entered_at)
        repo.save(conn, [cancel(state, now=now, reason=why)], [], now=now)
        close_tasks(conn, [], [row.id], now=now)
        message = f"run of flow {flow.key!r} {why}"
        insert_history(conn, [HistoryEntry(row.record_id, row.id, message, now)])
        return enrollment_view(conn, ctx, enrollment_id)


def _locked(conn: Connection, actor: Actor, enrollment_id: int) -> tuple[repo.EnrollmentRow, Row]:
    rows = repo.lock(conn, [enrollment_id])
    flow = find_flow(conn, rows[0].flow_id) if rows else None
    if not rows or flow is None or not can_see_flow(conn, actor, flow):
        raise NotFoundError(f"no enrollment {enrollment_id} that you can see")
    return rows[0], flow


# Called by `decide` on its transaction, the run locked and the decider allowed, before the
# decision is taken: what a decision from an email link checks and marks (`approval_links`).
BeforeDecision = Callable[[Connection, EnrollmentState], None]


def decide(
    ctx: Context,
    actor: Actor,
    enrollment_id: int,
    step_key: str,
    button: str,
    comment: str | None = None,
    *,
    before: BeforeDecision | None = None,
) -> EnrollmentView:
    """Press `button` on approval step `step_key`: the record goes on along that button's branch
    (its next steps run at once when due); on a step with a quorum, a group member's press of
    its first button is a vote. Refused with the engine's reason (ConflictError), or who may
    decide (PermissionDeniedError)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if flow.status not in repo.RUNNING_FLOWS:
            raise ConflictError(
                f"flow {flow.key!r} is {flow.status}: decisions wait until it runs again"
            )
        if row.state is None:
            raise ConflictError("the record has not entered the flow yet")
        group_size = _require_decider(conn, ctx, actor, row, step_key)
        if before is not None:
            before(conn, row.state)
        event = DecisionMade(
            step_key=step_key,
            button=button,
            by=actor.username,
            comment=comment or "",
            group_size=group_size,
        )
        moved = move_batch(conn, ctx, actor, [row], now=now, events={row.id: event})
        refused = moved.outcomes[row.id].refused
        if refused:
            raise ConflictError(f"decision refused: {refused}")
        repo.notify_due(conn)
        return enrollment_view(conn, ctx, enrollment_id)


def decision_refusal_for(
    ctx: Context, actor: Actor, enrollment_id: int, step_key: str
) -> str | None:
    """Why `actor` may not press the buttons of approval step `step_key` of run
    `enrollment_id` (who may, in words; or the step's condition, false for the record now), or
    None when they may: what `decide` checks, read without deciding (the web pages show the
    buttons only to whoever may press them, while the step's condition holds)."""
    with read_connection(ctx.engine) as conn:
        rows = repo.read_enrollments(conn, [enrollment_id])
        flow = find_flow(conn, rows[0].flow_id) if rows else None
        if not rows or flow is None or not can_see_flow(conn, actor, flow):
            raise NotFoundError(f"no enrollment {enrollment_id} that you can see")
        row = rows[0]
        try:
            _require_decider(conn, ctx, actor, row, step_key)
        except PermissionDeniedError as refused:
            return refused.message
        if row.state is None or row.state.step_key != step_key:
            return None  # not waiting there: `decide` says why when pressed
        # The buttons count only while the step's condition holds for the record as it is now.
        reference = load_reference(conn, ctx, [row])
        info = reference.infos.get((row.flow_id, row.flow_version))
        record = reference.records.get(row.record_id)
        if info is None or record is None:
            return None
        rtype = reference.types.get(info.definition.record_type)
        return condition_refusal_for(ctx, info.definition, row, record, rtype, now=ctx.now())


def _require_decider(
    conn: Connection, ctx: Context, actor: Actor, row: repo.EnrollmentRow, step_key: str
) -> int | None:
    """Only the person or group the approval step asks (or an admin) may press its buttons,
    and never the requester of a step that forbids self-approval (`engine.approvals`); a
    decision on another step is left to the engine to refuse. The active members of the group
    asked when `actor` is one of them (their press is a vote), else None."""
    state = row.state
    waiting = state.waiting if state is not None else None
    if (
        state is None
        or waiting is None
        or waiting.kind is not WaitKind.APPROVAL
        or state.step_key != step_key
    ):
        return None
    asked_of = waiting.asked_of
    # A user field may hold the user's id; a username of digits is that user, not an id.
    if asked_of is not None and asked_of.isdigit() and find_user_by_name(conn, asked_of) is None:
        asked_of = usernames_by_id(conn, [int(asked_of)]).get(int(asked_of), asked_of)
    groups = group_names_by_user(conn, [actor.id]).get(actor.id, [])
    decider = Decider(actor.username, groups=groups, is_admin=actor.is_admin)
    step = _approval_step(conn, ctx, row, step_key)
    rule = step.forbid_self_approval if step is not None else None
    requester = (
        Requester(_user_in_field(conn, row.record_id, rule.field), rule.field) if rule else None
    )
    refusal = decision_refusal(asked_of, decider, requester)
    if refusal is not None:
        raise PermissionDeniedError(refusal)
    group = (
        asked_of.removeprefix(GROUP_PREFIX)
        if asked_of and asked_of.startswith(GROUP_PREFIX)
        else None
    )
    if group is None or group not in groups:
        return None
    return len(active_members_of_groups(conn, [group]))


def _approval_step(
    conn: Connection, ctx: Context, row: repo.EnrollmentRow, step_key: str
) -> ApprovalStep | None:
    pair = (row.flow_id, row.flow_version)
    info = repo.load_flows(conn, [pair], definitions_cache(ctx)).get(pair)
    step = info.definition.step(step_key) if info is not None else None
    return step if isinstance(step, ApprovalStep) else None


def _user_in_field(conn: Connection, record_id: int, field: str) -> str | None:
    """The username held in the record's user field `field` (an id, or a name), or None."""
    record = find_record(conn, record_id)
    value = record.data.get(field) if record is not None else None
    if value is None or value == "":
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return usernames_by_id(conn, [int(value)]).get(int(value), str(value))
    return str(value)


def restart_enrollment(ctx: Context, actor: Actor, enrollment_id: int) -> EnrollmentView:
    """Start the record over from the flow's first step (seed 003), also after it finished;
    the email count starts over. The flow must be running (active or draining)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if flow.status not in repo.RUNNING_FLOWS:
            raise ConflictError(f"flow {flow.key!r} is {flow.status}; restart it when it runs")
        if flow.status == "draining":
            # A restart admits the record again, and a draining flow admits nobody.
            raise ConflictError(
                f"flow {flow.key!r} is draining: records inside finish and no record enters "
                f"again, so enrollment {enrollment_id} cannot restart; reactivate the flow "
                f"(`crmflow flows resume {flow.key}`) to restart it"
            )
        if row.state is None:
            raise ConflictError("the record has not entered the flow yet; nothing to restart")
        if row.state.status is EnrollmentStatus.CANCELLED and row.state.end_reason.startswith(
            "loop guard"
        ):
            raise ConflictError("an enrollment stopped by the loop guard cannot be restarted")
        move_batch(conn, ctx, actor, [row], now=now, events={row.id: "restart"})
        repo.notify_due(conn)
        return enrollment_view(conn, ctx, enrollment_id)
