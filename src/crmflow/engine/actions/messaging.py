"""Actions that send something out: email, SMS, webhook, each one an outbox message.

The message is rendered here, completely, so that what the dispatcher sends is exactly what the
step run decided (and what `simulate` shows). Quiet hours hold the message until they end.
"""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.commands import (
    EmailPayload,
    OutboxMessage,
    SmsPayload,
    WebhookPayload,
    action_ref,
    idempotency_key,
    message_id,
)
from crmflow.engine.definition import SendEmailAction, SendSmsAction, WebhookAction
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["send_email", "send_sms", "webhook"]


def _outbox(
    ctx: ActionContext,
    index: int,
    key: str | None,
    payload: EmailPayload | SmsPayload | WebhookPayload,
) -> OutboxMessage:
    return OutboxMessage(
        **ctx.ids(index, key),
        idempotency_key=_key(ctx, index, key),
        not_before=ctx.calendar.out_of_quiet_hours(ctx.now),
        payload=payload,
    )


def _key(ctx: ActionContext, index: int, key: str | None) -> str:
    return idempotency_key(ctx.enrollment_id, ctx.step_run, action_ref(key, index))


def _addresses(
    ctx: ActionContext, items: list[str], variables: dict[str, str], field: str
) -> tuple[str, ...]:
    out: list[str] = []
    for number, item in enumerate(items):
        # One template may give several addresses ("a@x.org, b@x.org").
        rendered = ctx.render(item, variables, field=f"{field}[{number}]")
        out += [a.strip() for a in rendered.split(",") if a.strip()]
    return tuple(out)


def send_email(action: SendEmailAction, index: int, ctx: ActionContext) -> ActionResult:
    # Variables are templates themselves, rendered first without each other.
    variables = {
        name: ctx.render(text, field=f"variables.{name}") for name, text in action.variables.items()
    }
    to = _addresses(ctx, action.to, variables, "to")
    if not action.to:
        default = ctx.scope.record.values.get("email")
        if not default:
            raise EvaluationError("no recipient: the email has no `to` and the record no email")
        to = (str(default),)
    if not to:
        raise EvaluationError("no recipient: `to` rendered empty")
    sender = ctx.render(action.from_, variables, field="from") if action.from_ else None
    payload = EmailPayload(
        message_id=message_id(_key(ctx, index, action.key), sender),
        from_address=sender,
        to=to,
        cc=_addresses(ctx, action.cc, variables, "cc"),
        bcc=_addresses(ctx, action.bcc, variables, "bcc"),
        reply_to=(
            ctx.render(action.reply_to, variables, field="reply_to") if action.reply_to else None
        ),
        subject=ctx.render(action.subject, variables, field="subject"),
        body=(
            ctx.render(action.body, variables, field="body") if action.body is not None else None
        ),
        template=action.template,
        variables=variables,
        archive=action.archive,
        record_id=ctx.scope.record.id,
    )
    message = _outbox(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


def send_sms(action: SendSmsAction, index: int, ctx: ActionContext) -> ActionResult:
    to = (
        ctx.render(action.to, field="to")
        if action.to
        else str(ctx.scope.record.values.get("phone") or "")
    )
    if not to.strip():
        raise EvaluationError("no recipient: the SMS has no `to` and the record no phone")
    payload = SmsPayload(to=to.strip(), text=ctx.render(action.message, field="message"))
    message = _outbox(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())


def webhook(action: WebhookAction, index: int, ctx: ActionContext) -> ActionResult:
    payload = WebhookPayload(
        url=ctx.render(action.url, field="url"),
        method=action.method,
        headers={
            name: ctx.render(value, field=f"headers.{name}")
            for name, value in action.headers.items()
        },
        body=ctx.render(action.body, field="body") if action.body is not None else None,
        secret=action.secret,
        timeout_seconds=action.timeout_seconds,
    )
    message = _outbox(ctx, index, action.key, payload)
    return ActionResult((message,), message.describe())
