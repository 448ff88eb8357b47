"""What the kinds that send something out (send_email, send_sms, webhook) share: each becomes
one outbox message.

The message is rendered by its kind, completely, so that what the dispatcher sends is exactly
what the step run decided (and what `simulate` shows). Quiet hours hold the message until they
end. The message's idempotency key is made from (enrollment, step run, action), so a step run
retried after a crash writes the same message, which the outbox keeps once.
"""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext
from crmflow.engine.commands import (
    EmailPayload,
    OutboxMessage,
    SmsPayload,
    WebhookPayload,
    action_ref,
    idempotency_key,
)

__all__ = ["message_key", "outbox_message"]


def outbox_message(
    ctx: ActionContext,
    index: int,
    key: str | None,
    payload: EmailPayload | SmsPayload | WebhookPayload,
) -> OutboxMessage:
    """The outbox message of the `index`th action of the step (`key`: its key), due when the
    calendar's quiet hours allow."""
    return OutboxMessage(
        **ctx.ids(index, key),
        idempotency_key=message_key(ctx, index, key),
        not_before=ctx.calendar.out_of_quiet_hours(ctx.now),
        payload=payload,
    )


def message_key(ctx: ActionContext, index: int, key: str | None) -> str:
    """The idempotency key of the message of the `index`th action of this step run."""
    return idempotency_key(ctx.enrollment_id, ctx.step_run, action_ref(key, index))
