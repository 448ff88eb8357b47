"""A message that failed for good (its last attempt, or a permanent refusal): what follows, in
the transaction in which the dispatcher marks it failed, so it happens once (issue 10).

1. The run that wrote it gets the `on_failure` policy of its action (continue, stop, goto a
   failure step): the engine decides (`engine.delivery_failure`), the runner's writes carry it
   out (a stopped run's messages not sent yet are cancelled, a failure step's actions run).
2. The record's history says "Email to x failed after N attempts: <error>" and what the policy
   did.
3. The flow's controller gets an in-app notification and an email (an outbox message to the
   address of their user account). That email is a failure notice: if it fails in turn, it is
   logged and nothing else happens (no notice of a notice, no policy).

Applying the policy runs in a savepoint: if it raises, the message is still marked failed and
the controller still told, with the reason the policy was not applied.
"""

from __future__ import annotations

import logging
from datetime import datetime

from crmflow.context import Actor, Context, flow_zone
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.delivery_failure import (
    FailedMessage,
    action_ref_of,
    apply_decision,
    decide,
    describe_message,
    policy_of,
)
from crmflow.engine.runtime import RecordSnapshot
from crmflow.runner import BatchWrites, Reference, load_reference
from crmflow.services.users import system_actor
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.delivery_failures import MessageOrigin, earlier_failures, origin_of
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import ClaimedMessage, insert_ignoring_duplicates
from crmflow.store.tasks import NewNotification, insert_notifications
from crmflow.store.users import find_user_by_name

__all__ = ["DEADLINE_NOTICE_PREFIX", "NOTICE_PREFIX", "message_failed"]

log = logging.getLogger("crmflow.delivery")

# The idempotency keys of failure notices: `crmflow-failed:<the failed message's key>`.
NOTICE_PREFIX = "crmflow-failed:"
# Those of the reminders and late notices of `services.deadlines`.
DEADLINE_NOTICE_PREFIX = "crmflow-deadline:"


def message_failed(
    conn: Connection, ctx: Context, message: ClaimedMessage, error: str, *, now: datetime
) -> None:
    """What follows message `message` failing for good with `error`, on the caller's
    transaction (the one that marks it failed)."""
    if message.idempotency_key.startswith((NOTICE_PREFIX, DEADLINE_NOTICE_PREFIX)):
        # A notice to a user of crmflow (a failure or a deadline notice): no policy, no notice.
        log.warning("notice %d to a user of crmflow failed: %s", message.id, error)
        return
    origin = origin_of(conn, message.id)
    if origin is None:
        return  # its run is gone: nobody to tell, nothing to move
    failed = FailedMessage(
        what=describe_message(message.kind, message.payload),
        attempts=message.attempts,
        error=error,
        step_key=origin.step_key,
        action_ref=action_ref_of(message.idempotency_key),
    )
    # The run is locked first: failures of one run, and the worker moving it, take turns.
    rows = repo.lock(conn, [origin.enrollment_id])
    reference = load_reference(conn, ctx, rows)
    info = reference.infos.get((rows[0].flow_id, rows[0].flow_version)) if rows else None
    if not rows or info is None:
        note = "the run or its flow version is gone"
    else:
        try:
            with conn.begin_nested():
                note = _apply_policy(
                    conn, ctx, message, origin, failed, rows[0], info, reference, now=now
                )
        except Exception as exc:
            log.error("message %d: the failure policy was not applied: %s", message.id, exc)
            note = f"the failure policy was not applied ({type(exc).__name__}: {exc})"
    text = f"{failed.text}; {note}"
    insert_history(conn, [HistoryEntry(origin.record_id, origin.enrollment_id, text, now)])
    controller = info.definition.controller if info is not None else None
    if controller:
        _tell_controller(conn, ctx, controller, message, origin, text, now=now)


def _apply_policy(
    conn: Connection,
    ctx: Context,
    message: ClaimedMessage,
    origin: MessageOrigin,
    failed: FailedMessage,
    row: repo.EnrollmentRow,
    info: repo.FlowInfo,
    reference: Reference,
    *,
    now: datetime,
) -> str:
    """The policy applied to the run `row` (locked); what it did, in words."""
    flow = info.definition
    policy = policy_of(flow, failed.step_key, failed.action_ref)
    decision = decide(
        policy,
        row.state,
        flow_running=info.status in repo.RUNNING_FLOWS,
        already_applied=_applied_before(conn, flow, message, origin),
    )
    record = reference.records.get(row.record_id)
    if decision.kind == "goto" and record is None:
        return f"on_failure: goto {decision.target} not applied: the record is gone"
    if row.state is None or decision.kind == "nothing":
        return decision.note
    outcome = apply_decision(
        flow,
        row.state,
        record or RecordSnapshot(row.record_id, flow.record_type, {}),
        decision,
        failed,
        now=now,
        zone=flow_zone(ctx, flow),
        record_type=reference.types.get(flow.record_type),
        limits=ctx.evaluation_limits,
    )
    if outcome is not None:
        writes = BatchWrites()
        writes.add_outcome(
            row.state, outcome, info.key, cancel_tasks_on_end=flow.cancel_open_tasks_on_end
        )
        actor: Actor = system_actor(conn, now=now)
        writes.write(conn, ctx, actor, now=now)
        repo.notify_due(conn)
    return decision.note


def _applied_before(
    conn: Connection, flow: FlowDefinition, message: ClaimedMessage, origin: MessageOrigin
) -> bool:
    """Whether another message of the same step run failed before this one with a policy that
    acts on the run (stop or goto): a step run takes its failure branch, or stops, once."""
    keys = earlier_failures(conn, origin.enrollment_id, origin.step_run, but=message.id)
    return any(policy_of(flow, origin.step_key, action_ref_of(k)) != "continue" for k in keys)


def _tell_controller(
    conn: Connection,
    ctx: Context,
    controller: str,
    message: ClaimedMessage,
    origin: MessageOrigin,
    text: str,
    *,
    now: datetime,
) -> None:
    """An in-app notification and an email (a failure notice) to the flow's controller; no email
    when their account has no address or is disabled (the notification says so)."""
    user = find_user_by_name(conn, controller)
    where = f"flow {origin.flow_key!r}, record {origin.record_id}, step {origin.step_key!r}"
    told = f"{where}: {text}"
    if user is None or not user.active or not user.email:
        why = "no such user" if user is None else "disabled" if not user.active else "no email"
        told += f" (no email sent to {controller}: {why})"
    insert_notifications(
        conn,
        [NewNotification("user", controller, told, origin.enrollment_id, origin.record_id, now)],
    )
    if user is None or not user.active or not user.email:
        return
    key = NOTICE_PREFIX + message.idempotency_key
    payload = EmailPayload(
        message_id=message_id(key, ctx.settings.mail_from),
        to=(user.email,),
        subject=f"crmflow: a message of flow {origin.flow_key} failed (record {origin.record_id})",
        body=(
            f"A message of flow {origin.flow_key!r} could not be delivered.\n\n"
            f"Record: {origin.record_id}\nRun: {origin.enrollment_id}\n"
            f"Step: {origin.step_key}\n\n{text}\n"
        ),
        archive=False,
        record_id=origin.record_id,
        category="transactional",  # to a user of crmflow: no unsubscribe link
    )
    row = {
        "enrollment_id": origin.enrollment_id,
        "step_key": origin.step_key,
        "step_run": origin.step_run,
        "idempotency_key": key,
        "kind": "email",
        "payload": payload.model_dump(mode="json"),
        "status": "pending",
        "not_before": now,
        "attempts": 0,
        "created_at": now,
    }
    insert_ignoring_duplicates(conn, [row])
