"""What the kinds that send something out (send_email, send_sms, webhook) share: each becomes
one outbox message.

The message is rendered by its kind, completely, so that what the dispatcher sends is exactly
what the step run decided (and what `simulate` shows). A message to one recipient of a flow
that only people or other systems start (manual and webhook triggers) is transactional: it is
claimed before the bulk ones (docs/delivery.md, "Priority"). Quiet hours hold the message until they
end, in the recipient's time zone when the record has one (a `timezone` field holding an IANA
name such as `Europe/Paris`), else in the flow's; the step run's line in the history says so. The
message's idempotency key is made from (enrollment, step run, action), so a step run retried
after a crash writes the same message, which the outbox keeps once.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from crmflow.engine.actions.base import ActionContext
from crmflow.engine.commands import (
    EmailPayload,
    OutboxMessage,
    SmsPayload,
    WebhookPayload,
    action_ref,
    idempotency_key,
)

__all__ = ["is_transactional", "message_key", "outbox_message", "recipient_zone"]

BULK, TRANSACTIONAL = 0, 1  # outbox priorities: the transactional are claimed first
PERSON_TRIGGERS = frozenset({"manual", "webhook"})  # started for one record, by someone

# The record fields that may hold the recipient's time zone, first found wins.
ZONE_FIELDS = ("timezone", "time_zone")


def outbox_message(
    ctx: ActionContext,
    index: int,
    key: str | None,
    payload: EmailPayload | SmsPayload | WebhookPayload,
) -> OutboxMessage:
    """The outbox message of the `index`th action of the step (`key`: its key), due when the
    calendar's quiet hours allow in the recipient's time zone."""
    zone = recipient_zone(ctx)
    not_before = ctx.calendar.out_of_quiet_hours(ctx.now, zone)
    return OutboxMessage(
        **ctx.ids(index, key),
        idempotency_key=message_key(ctx, index, key),
        not_before=not_before,
        payload=payload,
        held=_held_note(ctx, not_before, zone),
        priority=TRANSACTIONAL if is_transactional(ctx, payload) else BULK,
    )


def is_transactional(
    ctx: ActionContext, payload: EmailPayload | SmsPayload | WebhookPayload
) -> bool:
    """A message to one recipient (an email with one address in To, Cc and Bcc together; an
    SMS; a webhook call) of a flow that only a person or another system starts for one record
    (its triggers are all `manual` or `webhook`): it goes in the priority lane, ahead of the
    bulk messages of campaigns (start lists, schedules, record changes by the thousand)."""
    triggers = ctx.scope.flow.triggers
    if not triggers or any(t.type not in PERSON_TRIGGERS for t in triggers):
        return False
    if isinstance(payload, EmailPayload):
        return len({*payload.to, *payload.cc, *payload.bcc}) == 1
    return True


def recipient_zone(ctx: ActionContext) -> ZoneInfo | None:
    """The time zone of the record's `timezone` field, when it names one; None (the flow's
    calendar zone applies) when the record has none or it is not a time zone name."""
    for name in ZONE_FIELDS:
        value = ctx.scope.record.values.get(name)
        if isinstance(value, str) and 0 < len(value) <= 64:
            try:
                return ZoneInfo(value)
            except (ValueError, OSError):  # not a zone name, or a path-like value
                return None
    return None


def _held_note(ctx: ActionContext, not_before: datetime, zone: ZoneInfo | None) -> str | None:
    """Why a message waits, in words, when quiet hours hold it."""
    if not_before <= ctx.now or ctx.calendar.quiet_hours is None:
        return None
    start, end = ctx.calendar.quiet_hours
    shown = zone or ctx.calendar.zone
    whose = "the recipient's time zone" if zone is not None else "the flow's time zone"
    local = not_before.astimezone(shown).strftime("%Y-%m-%d %H:%M")
    return f"held by quiet hours ({start:%H:%M}-{end:%H:%M} {shown.key}, {whose}) until {local}"


def message_key(ctx: ActionContext, index: int, key: str | None) -> str:
    """The idempotency key of the message of the `index`th action of this step run."""
    return idempotency_key(ctx.enrollment_id, ctx.step_run, action_ref(key, index))
